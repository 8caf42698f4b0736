"""dlib 68-point landmarks of the clean aligned faces: the regressor's targets, cached by file hash.

The landmarks come from evaluation's DlibHog (HOG detector + 68-point predictor, the face
nearest the image centre), and are cached with evaluation's ResultCache under the file's
SHA-256, so a second run (or a second machine sharing the cache) never re-detects. Images where
dlib finds no face are skipped and counted (the miss is cached as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faces.face_models import DlibHog
from faces.face_sets import FaceImage, read_rgb
from faces.result_cache import ResultCache, default_dir
from obscura.digest import file_sha256
from obscura.errors import ObscuraError

CACHE_KIND = "stage1-dlib68-clean"


class NoFaceFound(ObscuraError):
    """dlib's detector found no face in an image."""


@dataclass
class Targets:
    """Landmarks (68 x 2, image pixels) per kept image, plus the images skipped for want of a face."""

    images: list[FaceImage]
    landmarks: list[np.ndarray]
    skipped: list[str] = field(default_factory=list)


def detect_landmarks(rgb: np.ndarray, detector: object, source: str) -> np.ndarray:
    """68 landmarks of the face nearest the centre, or NoFaceFound naming the image."""
    face = detector.detect(rgb).central(rgb.shape)
    if face is None:
        raise NoFaceFound(f"{source}: dlib's HOG detector found no face (image skipped)")
    return face.landmarks


def clean_landmarks(images: list[FaceImage], cache_dir: str | Path | None = None, progress: bool = False) -> Targets:
    """Cached dlib landmarks for every image; images without a detectable face are skipped and listed."""

    cache = ResultCache(cache_dir or default_dir(), CACHE_KIND)
    detector: DlibHog | None = None
    out = Targets([], [])
    for image in tqdm(images, desc="dlib landmarks", unit="img", disable=not progress):
        key = file_sha256(image.path)
        record = cache.get(key)
        if record is None:
            detector = detector or DlibHog()
            rgb, _ = read_rgb(image.path)
            try:
                marks = detect_landmarks(rgb, detector, str(image.path))
            except NoFaceFound:
                marks = np.zeros((0, 2))
            record = {"landmarks": np.asarray(marks, np.float64)}
            cache.put(key, record)
        if record["landmarks"].shape != (68, 2):
            out.skipped.append(str(image.path))
            continue
        out.images.append(image)
        out.landmarks.append(record["landmarks"])
    return out
