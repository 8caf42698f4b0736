"""Where a face sits in an image: centre crops, and similarity alignment from 5 landmarks (112x112 recogniser crops, the 256x256 face frame).

Landmark order everywhere: eye on the image's left, eye on the image's right, nose tip, mouth
corner on the image's left, mouth corner on the image's right (YuNet and MTCNN both emit this).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from obscura.errors import ObscuraError

# ArcFace / SFace template for 112x112 crops (the one OpenCV's FaceRecognizerSF.alignCrop uses).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# The pipeline's 256x256 face frame: the same template scaled to 70 % of the frame and centred,
# which leaves room for hair, chin and the optic's blur spread.
FACE_FRAME_SCALE = 0.7


def template(size: int) -> np.ndarray:
    """5-point template for a square crop of `size` px (112 -> ArcFace; other sizes -> face frame)."""
    if size == 112:
        return ARCFACE_112.copy()
    return (ARCFACE_112 - 56.0) * (size / 112.0) * FACE_FRAME_SCALE + size / 2.0


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) taking points `src` onto `dst`, as a 2x3 matrix."""

    src64, dst64 = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):
        tform = SimilarityTransform.from_estimate(src64, dst64)
        ok = bool(tform)
    else:
        tform = SimilarityTransform()
        ok = tform.estimate(src64, dst64)
    if not ok:
        raise ValueError("degenerate landmarks: no similarity transform fits them")
    return np.asarray(tform.params[:2], dtype=np.float64)


def align(image: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp `image` so its 5 landmarks land on the template of a `size` x `size` crop."""

    pts = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    matrix = similarity(pts, template(size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """The 5 template points from dlib's 68: eye centres, nose tip (30), mouth corners (48, 54)."""
    p = np.asarray(points68, dtype=np.float64).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def centre_crop(rgb: np.ndarray, size: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The central size x size crop and its top-left (x, y) offset in the image."""
    h, w = rgb.shape[:2]
    if h < size or w < size:
        raise ObscuraError(f"{source}: image is {w}x{h} px; expected at least data.image_size = {size}")
    x0, y0 = (w - size) // 2, (h - size) // 2
    return rgb[y0 : y0 + size, x0 : x0 + size], np.array([x0, y0], dtype=np.float64)
