"""Faces that move: a seeded random similarity transform of an image and of its 68 landmarks alike.

The aligned face sets put every face at one place and one scale, where answering the mean face
shape is already a good landmark estimate. A camera sees faces anywhere in its frame, turned and
nearer or farther, so utility is trained and judged on moved faces: each image is rotated about
its centre by up to +-20 degrees, scaled by up to +-15 % and shifted by up to +-10 % of the frame
(and mirrored, in training), and its landmarks, found once by dlib on the clean aligned image, are
moved by the same matrix: nothing is detected on a moved image. The motion of a test image is a
function of its file name and a seed, so every method is judged on the same moved faces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from obscura.digest import bytes_sha256

MAX_ROTATION_DEG = 20.0
MAX_SCALE = 0.15
MAX_SHIFT = 0.10  # of the frame's side

# dlib's 68 points mirrored left-right: point i of a mirrored face is point MIRROR_68[i] of the original.
MIRROR_68 = np.array(
    [*range(16, -1, -1)]  # jaw
    + [*range(26, 21, -1), *range(21, 16, -1)]  # brows
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


@dataclass(frozen=True)
class Motion:
    """A similarity transform about the frame's centre: rotation (degrees, counter-clockwise), scale, shift (share of the side), mirror."""

    angle_deg: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    mirror: bool = False

    def matrix(self, width: int, height: int) -> np.ndarray:
        """The 2 x 3 matrix taking original pixel coordinates (x, y) to moved ones, mirror included."""
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        m = cv2.getRotationMatrix2D(centre, self.angle_deg, self.scale)
        m[:, 2] += (self.shift_x * width, self.shift_y * height)
        if self.mirror:  # x -> (W - 1) - x after the similarity
            m = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0.0, 0.0, 1.0]])
        return m

    def as_dict(self) -> dict[str, float | bool]:
        """Plain values, for the transforms written next to a result."""
        return asdict(self)


def random_motion(rng: np.random.Generator, mirror: bool) -> Motion:
    """A motion drawn uniformly from the ranges (mirrored with probability 1/2 when `mirror`)."""
    angle, scale, sx, sy = rng.uniform(-1.0, 1.0, 4)
    return Motion(
        float(angle * MAX_ROTATION_DEG),
        float(1.0 + scale * MAX_SCALE),
        float(sx * MAX_SHIFT),
        float(sy * MAX_SHIFT),
        bool(mirror and rng.random() < 0.5),
    )


def fixed_motion(path: str | Path, seed: int) -> Motion:
    """The fixed motion of a test image: drawn from (seed, the image's identity folder and file name), never mirrored."""
    key = f"{seed}:{Path(path).parent.name}/{Path(path).name}"
    return random_motion(np.random.default_rng(int(bytes_sha256(key.encode())[:16], 16)), mirror=False)


def move_image(rgb: np.ndarray, motion: Motion) -> np.ndarray:
    """The image under the motion, same size; what comes into the frame is the image reflected at its border."""
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, motion.matrix(w, h), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def move_landmarks(points: np.ndarray, motion: Motion, width: int, height: int) -> np.ndarray:
    """68 x 2 landmarks (x, y) under the same motion as `move_image`, relabelled left-right when mirrored."""
    points = np.asarray(points, dtype=np.float64)
    moved = points @ motion.matrix(width, height)[:, :2].T + motion.matrix(width, height)[:, 2]
    return moved[MIRROR_68] if motion.mirror else moved
