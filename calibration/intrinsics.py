"""Camera intrinsics from checkerboard images (OpenCV), so heatmap coordinates map to sensor pixels.

The pinhole model with radial and tangential distortion (cv2.calibrateCamera): K = [[fx, 0, cx],
[0, fy, cy], [0, 0, 1]] and distortion (k1, k2, p1, p2, k3). `to_sensor_pixels` maps points of an
undistorted image (e.g. heatmap peaks) back to the raw sensor's pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from obscura.errors import ObscuraError


@dataclass
class Intrinsics:
    """Camera matrix, distortion, image size and the calibration's RMS reprojection error (px)."""

    camera_matrix: list[list[float]]
    distortion: list[float]
    image_size: tuple[int, int]
    rms_reprojection_px: float
    views_used: int
    views_rejected: list[str] = field(default_factory=list)


def board_points(inner_corners: tuple[int, int], square_m: float) -> np.ndarray:
    """3-D corner coordinates (metres) on the board plane z = 0, row by row as OpenCV finds them."""
    cols, rows = inner_corners
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2)
    return np.hstack([grid * square_m, np.zeros((len(grid), 1))]).astype(np.float32)


def find_corners(gray: np.ndarray, inner_corners: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner-corner positions of a checkerboard in a grey image, or None if not found."""

    found, corners = cv2.findChessboardCorners(
        gray, inner_corners, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    return cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)


def calibrate(
    images: list[np.ndarray], names: list[str], inner_corners: tuple[int, int], square_m: float, min_views: int = 5
) -> Intrinsics:
    """Calibrate from grey or colour uint8 images of a checkerboard with `inner_corners` (cols, rows)."""

    if not images:
        raise ObscuraError("no checkerboard images given; expected at least 5 views")
    size = images[0].shape[:2]
    object_points, image_points, rejected = [], [], []
    template = board_points(inner_corners, square_m)
    for image, name in zip(images, names):
        if image.shape[:2] != size:
            raise ObscuraError(
                f"checkerboard image {name} is {image.shape[1]} x {image.shape[0]}; expected {size[1]} x {size[0]} like the first"
            )
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        corners = find_corners(gray, inner_corners)
        if corners is None:
            rejected.append(name)
            continue
        object_points.append(template)
        image_points.append(corners)
    if len(image_points) < min_views:
        raise ObscuraError(
            f"a {inner_corners[0]} x {inner_corners[1]} inner-corner checkerboard was found in {len(image_points)} "
            f"of {len(images)} images; expected at least {min_views} (check --corners: inner corners, not squares)"
        )
    # k3 stays 0: with a few views it only over-fits the corners of the field.
    rms, matrix, dist, _, _ = cv2.calibrateCamera(
        object_points, image_points, (size[1], size[0]), None, None, flags=cv2.CALIB_FIX_K3
    )
    return Intrinsics(
        matrix.tolist(), dist.ravel().tolist(), (size[1], size[0]), float(rms), len(image_points), rejected
    )


def to_sensor_pixels(points_xy: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Map undistorted pixel coordinates (N x 2, e.g. heatmap peaks) to the raw sensor's (distorted) pixels."""

    k = np.array(intrinsics.camera_matrix)
    xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    rays = np.hstack([(xy - k[:2, 2]) / np.diag(k)[:2], np.ones((len(xy), 1))])
    projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, np.array(intrinsics.distortion))
    return projected.reshape(-1, 2)


def render_checkerboard(
    camera_matrix: np.ndarray,
    rvec: np.ndarray,
    tvec: np.ndarray,
    inner_corners: tuple[int, int],
    square_m: float,
    image_size: tuple[int, int],
    supersample: int = 4,
) -> np.ndarray:
    """A synthetic grey view (uint8) of a checkerboard (inner_corners + 1 squares, white margin) through a
    distortion-free pinhole camera: each pixel looks up the board colour where its ray meets the board
    plane; supersampled for anti-aliasing. For tests with a known camera matrix."""

    width, height = image_size
    s = supersample
    ys, xs = np.mgrid[0 : height * s, 0 : width * s]
    pix = np.stack([(xs + 0.5) / s - 0.5, (ys + 0.5) / s - 0.5, np.ones_like(xs, dtype=float)], axis=-1)
    rays = pix @ np.linalg.inv(camera_matrix).T
    rot, _ = cv2.Rodrigues(rvec)
    # Ray point r*d in camera frame; board point b = R^T (r d - t); solve b_z = 0.
    d_board = rays @ rot  # R^T d for row vectors
    t_board = -(rot.T @ tvec.reshape(3))
    r = -t_board[2] / d_board[..., 2]
    bx = r * d_board[..., 0] + t_board[0]
    by = r * d_board[..., 1] + t_board[1]
    # Corner (0, 0) of the inner grid is at the board origin; squares extend one beyond it.
    i, j = np.floor(bx / square_m) + 1, np.floor(by / square_m) + 1
    cols, rows = inner_corners
    on_board = (i >= 0) & (i <= cols) & (j >= 0) & (j <= rows) & (r > 0)
    value = np.where(on_board, np.where((i + j) % 2 == 0, 0.0, 255.0), 255.0)
    return value.reshape(height, s, width, s).mean(axis=(1, 3)).round().astype(np.uint8)


def synthetic_views(
    camera_matrix: np.ndarray,
    image_size: tuple[int, int],
    inner_corners: tuple[int, int],
    square_m: float,
    count: int,
    seed: int = 0,
) -> list[np.ndarray]:
    """`count` rendered views of the board, tilted by up to ~23 degrees, 0.3-0.4 m away, spread over the field."""

    rng = np.random.default_rng(seed)
    centre = np.array([(inner_corners[0] - 1) / 2 * square_m, (inner_corners[1] - 1) / 2 * square_m, 0.0])
    images = []
    for _ in range(count):
        rvec = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2)])
        rot, _ = cv2.Rodrigues(rvec)
        tvec = np.array([rng.uniform(-0.07, 0.07), rng.uniform(-0.05, 0.05), rng.uniform(0.3, 0.4)]) - rot @ centre
        images.append(
            render_checkerboard(camera_matrix, rvec, tvec, inner_corners, square_m, image_size, supersample=3)
        )
    return images
