"""The registry of methods under test: name -> function from a clean RGB image to its output.

Every method maps an sRGB uint8 HxWx3 image to one of the same size. Image-space baselines work
on the sRGB values directly; optical baselines decode sRGB to linear light, image through an
`optics.presets` camera, and encode back to sRGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from anonymizer import runs
from anonymizer.learned_optic import load_learned_optic, regressor_landmarks
from anonymizer.nets.regressor import load_regressor
from obscura import paths
from obscura.digest import bytes_sha256, file_sha256
from obscura.errors import ObscuraError
from optics import presets
from optics.image_io import from_uint8, to_uint8
from optics.sensor import Sensor
from optics.srgb_capture import SrgbImaging, capture_uint8, psf_imaging

OPTICAL_SEED = 0  # the random Zernike optic is drawn once from this seed, so runs agree


@dataclass(frozen=True)
class Method:
    """A named image transform and the key under which its per-image results may be cached."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    cache_key: str
    description: str
    # For capture methods with a heatmap regressor: output image -> 68 x 2 landmarks (x, y), pixels.
    landmarks: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def is_identity(self) -> bool:
        """True for `clean`, whose outputs are the source images themselves."""
        return self.name == "clean"


def lowres(image: np.ndarray, n: int) -> np.ndarray:
    """Area-downsample the whole image to n x n, then bilinear back to its size."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (n, n), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma_px` (kernel to +-4 sigma, edges reflected)."""
    k = 2 * int(np.ceil(4 * sigma_px)) + 1
    return cv2.GaussianBlur(image, (k, k), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT_101)


def pixelate(image: np.ndarray, block_px: int) -> np.ndarray:
    """Mosaic: every block_px x block_px block (from the top-left) replaced by its mean colour."""
    h, w = image.shape[:2]
    out = np.empty_like(image)
    for y in range(0, h, block_px):
        for x in range(0, w, block_px):
            block = image[y : y + block_px, x : x + block_px]
            out[y : y + block_px, x : x + block_px] = np.round(block.reshape(-1, image.shape[2]).mean(0))
    return out


def optical(preset: str, seed: int = OPTICAL_SEED) -> Callable[[np.ndarray], np.ndarray]:
    """An optics.presets camera as an image method: sRGB -> linear -> camera -> sRGB."""
    state: dict[str, object] = {}

    def apply(image: np.ndarray) -> np.ndarray:
        if "camera" not in state:
            state["camera"] = presets.camera_from_spec(preset, seed=seed).eval()
        return capture_uint8(state["camera"], image)

    return apply


def psf_method(psf: torch.Tensor, name: str, sensor_seed: int = 0) -> Method:
    """Imaging through a given PSF (C x h x w) and the default sensor, e.g. an as-built optic's.

    Evaluating it next to the design optic gives the change in the privacy and utility figures
    that fabrication errors cause.
    """
    kernel = psf.detach().float().cpu()
    imaging = psf_imaging(kernel, Sensor())

    def apply(image: np.ndarray) -> np.ndarray:
        return capture_uint8(imaging, image, torch.Generator().manual_seed(sensor_seed))

    digest = bytes_sha256(kernel.numpy().tobytes())[:12]
    return Method(name, apply, f"{name}-{digest}", f"imaging through the {name} PSF")


_FIXED: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "clean": (lambda im: im, "the source image unchanged"),
    **{
        f"lowres{n}": ((lambda im, n=n: lowres(im, n)), f"area-downsampled to {n}x{n}, bilinear back")
        for n in (8, 16, 32)
    },
    **{f"blur{s}": ((lambda im, s=s: gaussian_blur(im, float(s))), f"Gaussian blur, sigma {s} px") for s in (2, 4, 8)},
    "pixelate16": ((lambda im: pixelate(im, 16)), "mosaic of 16x16-px blocks, each its mean colour"),
    "defocus": (optical("defocus"), "defocused thin lens through optics.presets ('defocus')"),
    "zernike-random": (
        optical("zernike-random"),
        f"random Zernike phase optic through optics.presets ('zernike-random', seed {OPTICAL_SEED})",
    ),
}


def learned_optic(spec: str) -> Method:
    """`optic` (the committed stage-I optic and regressor in weights/) or `optic:PATH` (a stage-I output or optic .npz)."""
    path = spec.partition(":")[2] or str(paths.WEIGHTS_DIR / runs.OPTIC)
    learned = load_learned_optic(path)
    return Method(
        spec,
        learned.capture,
        learned.key,
        f"the learned optic {path} (stage I), seeded sensor noise",
        landmarks=learned.landmarks,
    )


def psf_file(spec: str) -> Method:
    """`psf:FILE`: imaging through a PSF saved as .npy (C x h x w), e.g. an as-built optic's from `simulate.py tolerance`.

    Landmarks come from the stage-I regressor beside the file, else the committed one, so the
    regressor's NME under fabrication errors is reported next to privacy.
    """
    path = Path(spec.partition(":")[2])
    try:
        psf = np.load(path)
    except (OSError, ValueError) as err:
        raise ObscuraError(
            f"--method {spec}: cannot read a PSF from {path} ({err}); expected a .npy array C x h x w"
        ) from None
    if psf.ndim != 3 or psf.shape[0] != 3 or not np.all(np.isfinite(psf)) or np.any(psf.sum(axis=(1, 2)) <= 0):
        raise ObscuraError(f"--method {spec}: PSF has shape {psf.shape}; expected a finite, non-zero 3 x h x w array")
    method = psf_method(torch.from_numpy(psf / psf.sum(axis=(1, 2), keepdims=True)), f"psf:{path.name}")
    regressor = next(
        (r for r in (path.parent / runs.REGRESSOR, paths.WEIGHTS_DIR / runs.REGRESSOR) if r.is_file()), None
    )
    if regressor is None:
        return method
    model, size = load_regressor(regressor)
    return Method(
        spec,
        method.apply,
        f"{method.cache_key}-{file_sha256(regressor)[:12]}",
        f"{method.description}; landmarks by {regressor}",
        landmarks=lambda capture: regressor_landmarks(model, size, capture),
    )


def names() -> list[str]:
    """Method names accepted by --method."""
    return list(_FIXED)


def get(name: str) -> Method:
    """Look up a method by name; an unknown name is a one-line error listing the known ones."""
    if name in _FIXED:
        fn, description = _FIXED[name]
        return Method(name, fn, name, description)
    if name == "optic" or name.startswith("optic:"):
        return learned_optic(name)
    if name.startswith("psf:"):
        return psf_file(name)
    raise ObscuraError(
        f"--method {name!r}: unknown method (expected one of: {', '.join(names())}, optic, optic:PATH, psf:FILE.npy)"
    )


def method_imaging(name: str) -> SrgbImaging:
    """A method's output on an sRGB batch N x 3 x H x W, image by image through uint8 (as evaluation sees it)."""
    method = get(name)
    return lambda images, generator: from_uint8(np.stack([method.apply(x) for x in to_uint8(images)]))
