"""Configuration dataclasses of the simulated camera (read and written by obscura.config).

Defaults follow the reference system (CVPR 2024): 4 mm aperture, 50 mm image distance,
640/550/440 nm channel centres, 3.713 um pixels, 256 x 256 sensor window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class LensConfig:
    """Thin lens at the pupil. material 'ideal' is achromatic; a Sellmeier name scales f by (n_d - 1)/(n - 1)."""

    focal_length_m: float = 0.05
    aperture_diameter_m: float = 4e-3
    material: str = "ideal"
    design_wavelength_m: float = 550e-9


@dataclass
class MaskConfig:
    """Phase mask in the pupil: kind 'none', 'zernike' (Noll terms) or 'freeform' (one height per sample)."""

    kind: str = "none"
    num_terms: int = 300
    fixed_zero_terms: int = 3
    material: str = "fused_silica"
    constraint: str = "none"
    max_height_m: float = 0.0
    levels: int = 0
    init_rms_height_m: float = 0.0
    seed: int = 0


@dataclass
class SpectrumConfig:
    """Per-channel Gaussian spectral response (R, G, B), sampled at `samples_per_channel` wavelengths."""

    centres_m: list[float] = field(default_factory=lambda: [640e-9, 550e-9, 440e-9])
    fwhm_m: float = 60e-9
    samples_per_channel: int = 3


@dataclass
class OpticConfig:
    """Everything that fixes the PSF: pupil sampling, lens, mask, spectrum, geometry and sensor sampling."""

    pupil_samples: int = 256
    lens: LensConfig = field(default_factory=LensConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)
    sensor_distance_m: float = 0.05
    object_distance_m: float = math.inf
    pixel_pitch_m: float = 3.713e-6
    psf_size: int = 256
    pixel_oversample: int = 3


@dataclass
class SensorConfig:
    """Sensor: a linear value of 1 collects exposure * full_well electrons; gain 0 means full well -> max code.

    quantise False models an ideal (continuous) converter, used for gradient checks.
    """

    full_well_e: float = 10000.0
    exposure: float = 1.0
    read_noise_e: float = 2.0
    gain_dn_per_e: float = 0.0
    bit_depth: int = 10
    quantise: bool = True
    bayer: bool = False
    noise: bool = True


@dataclass
class CameraConfig:
    """Optic plus sensor."""

    optic: OpticConfig = field(default_factory=OpticConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
