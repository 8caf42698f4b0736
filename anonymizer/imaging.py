"""What a recogniser or regressor sees of a batch of clean faces: captures through an optic file, or an evaluation method's output.

Each is an `Imaging`: sRGB batch N x 3 x H x W in [0, 1] (and a generator for the sensor noise)
-> an sRGB batch of the same shape.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from optics.srgb import linear_to_srgb, srgb_to_linear
from optics.image_io import from_uint8, to_uint8

Imaging = Callable[[Tensor, torch.Generator], Tensor]


def optic_imaging(optic_file: Path) -> Imaging:
    """Captures through a frozen optic file's camera (sensor noise from the generator)."""
    from optics.presets import camera_from_spec

    camera = camera_from_spec(str(optic_file)).eval().requires_grad_(False)
    return lambda images, generator: linear_to_srgb(camera(srgb_to_linear(images), generator=generator))


def method_imaging(name: str) -> Imaging:
    """An evaluation method's output, image by image (through uint8, as evaluation sees it)."""
    from evaluation import methods

    method = methods.get(name)
    return lambda images, generator: from_uint8(np.stack([method.apply(x) for x in to_uint8(images)]))
