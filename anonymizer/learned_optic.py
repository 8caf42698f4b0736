"""A saved stage-I result (optic .npz + regressor.pt) as an evaluation capture method and landmark predictor.

`load_learned_optic(path)` takes a stage-I output folder, or an optic .npz with `regressor.pt`
beside it (or an explicit regressor file). `capture` images an sRGB uint8 face through the one
capture path (sRGB -> linear -> camera with seeded noise -> sRGB); `landmarks` runs the
regressor on the central crop of the training size, which is the geometry it was trained on
(celeba-crops frames, centre-cropped), and returns image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anonymizer import runs
from anonymizer.nets import heatmaps
from anonymizer.nets.regressor import HeatmapRegressor, load_regressor
from faces.alignment import centre_crop
from obscura.digest import bytes_sha256, file_sha256
from obscura.errors import ObscuraError
from optics.camera import Camera
from optics.image_io import from_uint8
from optics.presets import camera_from_spec
from optics.srgb_capture import capture_uint8


@dataclass
class LearnedOptic:
    """The learned camera and its regressor, ready for numpy images."""

    camera: Camera
    regressor: HeatmapRegressor
    image_size: int
    key: str  # identifies the two files' contents (for evaluation's result cache)

    def capture(self, image: np.ndarray) -> np.ndarray:
        """sRGB uint8 H x W x 3 -> the sensor's sRGB uint8 capture of the same size (seeded noise)."""
        return capture_uint8(self.camera, image)

    def landmarks(self, capture: np.ndarray) -> np.ndarray:
        """68 x 2 landmarks (x, y; image pixels) that the regressor finds in an sRGB uint8 capture."""
        return regressor_landmarks(self.regressor, self.image_size, capture)


def regressor_landmarks(regressor: HeatmapRegressor, image_size: int, capture: np.ndarray) -> np.ndarray:
    """68 x 2 landmarks (x, y; image pixels) a regressor finds in the central crop of its training size."""
    crop, offset = centre_crop(np.asarray(capture), image_size, "capture")
    with torch.no_grad():
        found = heatmaps.landmarks(regressor(from_uint8(crop)[None]), regressor.stride)[0].double().numpy()
    return found + offset


def resolve(path: str | Path, regressor: str | Path | None = None) -> tuple[Path, Path]:
    """(optic file, regressor file) of a stage-I output folder or an optic .npz; missing ones are a one-line error."""
    path = Path(path)
    optic = path / runs.OPTIC if path.is_dir() else path
    reg = Path(regressor) if regressor is not None else optic.parent / runs.REGRESSOR
    for what, file in (("optic", optic), ("regressor", reg)):
        if not file.is_file():
            raise ObscuraError(
                f"learned optic {path}: {what} file {file} not found "
                f"(expected a stage-I output: {runs.OPTIC} + {runs.REGRESSOR})"
            )
    return optic, reg


def load_learned_optic(path: str | Path, regressor: str | Path | None = None, seed: int = 0) -> LearnedOptic:
    """Load a stage-I result for evaluation: deterministic sensor noise from `seed`, modules in eval mode."""
    optic_file, reg_file = resolve(path, regressor)
    camera = camera_from_spec(str(optic_file), seed=seed).eval()
    model, image_size = load_regressor(reg_file)
    key = bytes_sha256((file_sha256(optic_file) + file_sha256(reg_file) + str(seed)).encode())[:16]
    return LearnedOptic(camera, model, image_size, f"optic-{key}")
