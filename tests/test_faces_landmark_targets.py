"""dlib 68-point targets: faceless images are skipped and counted, results are cached by file hash."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

import faces.face_models
from faces import landmark_targets
from faces.face_models import DlibHog
from faces.face_sets import FaceImage, list_images


def test_faceless_image_is_reported_by_name() -> None:

    with pytest.raises(landmark_targets.NoFaceFound, match="blank.png: dlib's HOG detector found no face"):
        landmark_targets.detect_landmarks(np.full((160, 160, 3), 128, np.uint8), DlibHog(), "blank.png")


def test_landmarks_are_cached_and_faceless_images_skipped(shared_data, tmp_path, monkeypatch) -> None:
    face = next(iter(list_images(shared_data / "celeba-crops").values()))[0]
    shutil.copy(face, tmp_path / "face.jpg")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((160, 160, 3), 128, np.uint8))
    images = [FaceImage("a", tmp_path / "face.jpg"), FaceImage("a", tmp_path / "blank.png")]
    first = landmark_targets.clean_landmarks(images, tmp_path / "cache")
    assert [img.path.name for img in first.images] == ["face.jpg"]
    assert first.skipped == [str(tmp_path / "blank.png")]
    marks = first.landmarks[0]
    assert marks.shape == (68, 2) and np.all((marks > 0) & (marks < 160))
    assert 20 < np.linalg.norm(marks[36] - marks[45]) < 120  # outer eye corners of a 160 px face crop

    monkeypatch.setattr(faces.face_models, "DlibHog", _no_detector)  # a second pass must come from the cache
    again = landmark_targets.clean_landmarks(images, tmp_path / "cache")
    assert np.array_equal(again.landmarks[0], marks) and again.skipped == first.skipped


def _no_detector():
    raise AssertionError("the detector ran although every result is cached")
