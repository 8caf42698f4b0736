"""The one capture path: sRGB images -> linear light -> optic (PSF) -> sensor -> sRGB captures.

Files and networks live in sRGB; light adds up linearly, so the PSF and the sensor act on linear
values. Every caller (training, evaluation, calibration, deployment, the demo) images through
these functions, with a `Camera`, or a fixed PSF and sensor (`psf_imaging`) where the PSF is
frozen or measured.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from optics.camera import Camera
from optics.convolution import convolve
from optics.image_io import from_uint8, to_uint8
from optics.presets import camera_from_spec
from optics.sensor import Sensor
from optics.srgb import linear_to_srgb, srgb_to_linear

# linear scene N x C x H x W (and a generator for the sensor noise) -> linear capture of the same shape
LinearImaging = Callable[..., Tensor]
# sRGB batch N x 3 x H x W in [0, 1] (and a generator for the sensor noise) -> sRGB captures of the same shape
SrgbImaging = Callable[[Tensor, "torch.Generator | None"], Tensor]


def psf_imaging(psf: Tensor, sensor: Sensor) -> LinearImaging:
    """A fixed PSF (C x h x w) and a sensor as linear imaging: a frozen camera whose PSF is computed once, or a measured one."""

    def image(scene: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sensor(convolve(scene, psf), generator=generator)

    return image


def capture_srgb(imaging: LinearImaging, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """sRGB batch in [0, 1] -> its sRGB captures through `imaging` (differentiable; noise from `generator`)."""
    return linear_to_srgb(imaging(srgb_to_linear(images), generator=generator))


def capture_srgb_with_psf(
    camera: Camera | torch.nn.Module, images: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """`capture_srgb` through a trainable camera (or its DDP wrapper), and the PSF that made the capture (one forward)."""
    linear, psf = camera(srgb_to_linear(images), generator=generator, with_psf=True)
    return linear_to_srgb(linear), psf


def capture_uint8(imaging: LinearImaging, image: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
    """sRGB uint8 H x W x 3 -> its sRGB uint8 capture of the same size, without gradient."""
    with torch.no_grad():
        return to_uint8(capture_srgb(imaging, from_uint8(image)[None], generator)[0])


def frozen_camera_imaging(spec: str) -> SrgbImaging:
    """sRGB captures through a preset or saved optic file's camera, frozen (eval mode, no gradient to its optic)."""
    camera: Camera = camera_from_spec(spec).eval().requires_grad_(False)
    return lambda images, generator: capture_srgb(camera, images, generator)
