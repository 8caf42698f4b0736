"""Moved faces: the landmarks move exactly as the image does, mirrored points are relabelled, test motions are fixed."""

from __future__ import annotations

import numpy as np
import pytest

from faces.moved_faces import (
    MAX_ROTATION_DEG,
    MAX_SCALE,
    MAX_SHIFT,
    MIRROR_68,
    Motion,
    fixed_motion,
    move_image,
    move_landmarks,
    random_motion,
)


def _dot_image(point: np.ndarray, size: int = 160) -> np.ndarray:
    """A black image with a Gaussian dot (sigma 1.5 px) centred on a sub-pixel point."""
    ys, xs = np.mgrid[:size, :size]
    dot = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * 1.5**2))
    return np.repeat((dot * 255)[:, :, None], 3, axis=2).astype(np.float32)


def _centroid(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre (x, y) of an image's first channel."""
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    w = image[:, :, 0].astype(np.float64)
    return np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()


@pytest.mark.parametrize(
    "motion",
    [
        Motion(20.0, 1.15, 0.1, -0.1),
        Motion(-17.0, 0.85, -0.05, 0.08),
        Motion(8.0, 1.0, 0.02, 0.0, mirror=True),
        Motion(),
    ],
)
def test_a_rendered_point_lands_on_its_moved_landmark(motion: Motion) -> None:
    for point in (np.array([60.7, 75.6]), np.array([97.2, 117.1]), np.array([80.4, 98.9])):
        moved = move_image(_dot_image(point), motion)
        expected = move_landmarks(np.tile(point, (68, 1)), motion, 160, 160)[0]
        assert np.linalg.norm(_centroid(moved) - expected) < 0.05


def test_a_mirrored_face_swaps_its_left_and_right_points() -> None:
    points = np.random.default_rng(0).uniform(40, 120, (68, 2))
    moved = move_landmarks(points, Motion(mirror=True), 160, 160)
    assert np.allclose(moved[36], [159 - points[45][0], points[45][1]])  # an outer eye corner becomes the other
    assert np.allclose(moved[30], [159 - points[30][0], points[30][1]])  # the nose tip stays the nose tip
    assert sorted(MIRROR_68.tolist()) == list(range(68)) and np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))


def test_test_motions_are_fixed_by_file_and_seed_and_random_ones_span_the_ranges() -> None:
    a, b = fixed_motion("x/ann/0001.jpg", 0), fixed_motion("/elsewhere/ann/0001.jpg", 0)
    assert a == b and a != fixed_motion("x/ann/0001.jpg", 1) and not a.mirror
    draws = [random_motion(np.random.default_rng(i), mirror=True) for i in range(400)]
    angles = np.array([m.angle_deg for m in draws])
    scales = np.array([m.scale for m in draws])
    shifts = np.array([(m.shift_x, m.shift_y) for m in draws])
    assert np.abs(angles).max() <= MAX_ROTATION_DEG and np.abs(angles).max() > 0.9 * MAX_ROTATION_DEG
    assert np.abs(scales - 1).max() <= MAX_SCALE and np.abs(scales - 1).max() > 0.9 * MAX_SCALE
    assert np.abs(shifts).max() <= MAX_SHIFT and np.abs(shifts).max() > 0.9 * MAX_SHIFT
    assert 0.4 < np.mean([m.mirror for m in draws]) < 0.6
