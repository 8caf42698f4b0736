"""Camera intrinsics from checkerboard views rendered with a known camera matrix."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.intrinsics import (
    Intrinsics,
    calibrate,
    synthetic_views,
    to_sensor_pixels,
)
from obscura.errors import ObscuraError

K = np.array([[420.0, 0.0, 165.0], [0.0, 425.0, 118.0], [0.0, 0.0, 1.0]])
SIZE, CORNERS, SQUARE_M = (320, 240), (7, 5), 0.02


def _views(count: int, seed: int = 0) -> list[np.ndarray]:
    """Rendered views of the 7 x 5 board through the known camera."""
    return synthetic_views(K, SIZE, CORNERS, SQUARE_M, count, seed)


def test_calibration_recovers_the_camera_matrix():
    images = _views(12)
    result = calibrate(images, [f"v{i}" for i in range(12)], CORNERS, SQUARE_M)
    k = np.array(result.camera_matrix)
    assert k[0, 0] == pytest.approx(420.0, rel=0.01) and k[1, 1] == pytest.approx(425.0, rel=0.01)
    assert k[0, 2] == pytest.approx(165.0, abs=1.5) and k[1, 2] == pytest.approx(118.0, abs=1.5)
    assert result.rms_reprojection_px < 0.2 and result.views_used >= 8  # boards partly out of view are skipped
    # The renderer has no distortion: the fitted one may not move any pixel by more than half a pixel.
    grid = np.stack(np.meshgrid(np.linspace(0, 319, 9), np.linspace(0, 239, 7)), -1).reshape(-1, 2)
    assert np.abs(to_sensor_pixels(grid, result) - grid).max() < 0.5


def test_too_few_views_with_a_board_are_refused():
    images = [_views(12)[i] for i in (0, 2, 3)] + [np.full((240, 320), 255, np.uint8)]  # views 0, 2, 3 show the board
    with pytest.raises(ObscuraError, match="found in 3 of 4 images; expected at least 5"):
        calibrate(images, [f"v{i}" for i in range(4)], CORNERS, SQUARE_M)


def test_points_map_to_distorted_sensor_pixels():
    dist = [-0.2, 0.05, 0.001, -0.002, 0.0]
    intr = Intrinsics(K.tolist(), dist, SIZE, 0.1, 8)
    points = np.array([[10.0, 12.0], [165.0, 118.0], [300.0, 200.0]])
    raw = to_sensor_pixels(points, intr)
    np.testing.assert_allclose(raw[1], [165.0, 118.0], atol=1e-9)  # the principal point does not move
    back = cv2.undistortPoints(raw.reshape(-1, 1, 2), K, np.array(dist), P=K).reshape(-1, 2)
    np.testing.assert_allclose(back, points, atol=0.05)
    np.testing.assert_allclose(
        to_sensor_pixels(points, Intrinsics(K.tolist(), [0.0] * 5, SIZE, 0.1, 8)), points, atol=1e-9
    )
