"""Image-space baselines and 5-point alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import obscura.paths
from evaluation import methods
from evaluation.methods import get, psf_method
from faces import alignment
from obscura.errors import ObscuraError
from optics.fabrication.as_built import Errors, as_built_psf
from optics.presets import camera_from_spec


def _image(h: int = 64, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_registry_names_and_unknown_method() -> None:
    assert {
        "clean",
        "lowres8",
        "lowres16",
        "lowres32",
        "blur2",
        "blur4",
        "blur8",
        "pixelate16",
        "defocus",
        "zernike-random",
    } <= set(methods.names())
    with pytest.raises(ObscuraError, match="--method 'lowres7': unknown method"):
        methods.get("lowres7")


def test_clean_is_identity() -> None:
    img = _image()
    m = methods.get("clean")
    assert m.is_identity and np.array_equal(m.apply(img), img)


def test_lowres_keeps_size_and_only_n_by_n_information() -> None:
    img = _image(64, 64)
    out = methods.get("lowres8").apply(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    # area-downsampling to 8x8 means 8x8 block means; the bilinear up-sample passes through them
    # at each block's centre (between pixels 3 and 4 of every 8)
    means = img.reshape(8, 8, 8, 8, 3).astype(float).mean(axis=(1, 3))
    centres = out[3::8, 3::8].astype(float) / 2 + out[4::8, 4::8].astype(float) / 2
    assert np.abs(centres - means).mean() < 6.0
    # two images with equal block means give identical outputs
    shuffled = img.reshape(8, 8, 8, 8, 3)[:, ::-1, :, ::-1].reshape(64, 64, 3)
    assert np.array_equal(methods.lowres(shuffled, 8), out)


@pytest.mark.parametrize("sigma", [2, 4, 8])
def test_blur_preserves_mean_and_removes_detail(sigma: int) -> None:
    img = _image(96, 96)
    out = methods.get(f"blur{sigma}").apply(img)
    assert out.shape == img.shape
    assert abs(out.astype(float).mean() - img.astype(float).mean()) < 1.0
    assert out.astype(float).std() < img.astype(float).std() / (sigma * 1.5)


def test_blur_of_an_impulse_has_the_requested_sigma() -> None:
    img = np.zeros((81, 81, 3), np.uint8)
    img[40, 40] = 255
    out = methods.gaussian_blur(img.astype(np.float32), 4.0)[:, :, 0]
    y, x = np.mgrid[:81, :81]
    var = (out * (x - 40) ** 2).sum() / out.sum()
    assert np.sqrt(var) == pytest.approx(4.0, rel=0.02)


def test_pixelate_blocks_are_constant_means() -> None:
    img = _image(40, 40)
    out = methods.get("pixelate16").apply(img)
    block = out[:16, :16].reshape(-1, 3)
    assert (block == block[0]).all()
    assert np.allclose(block[0], img[:16, :16].reshape(-1, 3).mean(0), atol=0.5)
    edge = out[32:, 32:].reshape(-1, 3)  # the 8x8 remainder block
    assert np.allclose(edge[0], img[32:, 32:].reshape(-1, 3).mean(0), atol=0.5)


def test_similarity_recovers_a_known_transform() -> None:
    src = alignment.template(112)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = alignment.similarity(src, dst)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)


@pytest.mark.parametrize("size", [112, 256])
def test_align_puts_landmarks_on_the_template(size: int) -> None:
    # draw bright dots at 5 landmarks of a rotated, scaled face; after alignment they sit on the template
    img = np.zeros((300, 300, 3), np.uint8)
    tpl = alignment.template(112)
    pts = (tpl - 56) @ (1.9 * np.array([[0.96, -0.28], [0.28, 0.96]])).T + [150, 140]
    for x, y in pts:
        img[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    out = alignment.align(img, pts, size)
    assert out.shape == (size, size, 3)
    for x, y in alignment.template(size):
        assert out[int(round(y)), int(round(x))].max() > 100


def test_five_from_68() -> None:
    p = np.arange(136, dtype=float).reshape(68, 2)
    five = alignment.five_from_68(p)
    assert np.allclose(five[0], p[36:42].mean(0)) and np.allclose(five[2], p[30]) and np.allclose(five[4], p[54])


@pytest.mark.parametrize("name", ["defocus", "zernike-random"])
def test_optical_baselines_blur_through_optics(name: str) -> None:
    # a bright square on grey: the optic spreads it (edges soften) and keeps the image size
    img = np.full((96, 80, 3), 60, np.uint8)
    img[36:60, 28:52] = 230
    m = methods.get(name)
    out = m.apply(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    # the steepest step of the row-averaged profile across the square (averaging tames sensor noise)
    step = lambda a: np.abs(np.diff(a[40:56].astype(float).mean(axis=(0, 2)))).max()  # noqa: E731
    assert step(out) < 0.5 * step(img)
    assert np.array_equal(m.apply(img), out)  # seeded: the same capture every time


def test_psf_method_images_through_an_as_built_psf() -> None:

    lens = camera_from_spec("lens", pupil_samples=32, psf_size=16).optic
    with torch.no_grad():
        method = psf_method(as_built_psf(lens, Errors(distance_error_m=1e-3)), "as-built")
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    out = method.apply(image)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.std() < image.std()
    assert method.cache_key.startswith("as-built-") and np.array_equal(method.apply(image), out)


def test_psf_file_method_reads_a_saved_psf_and_refuses_bad_ones(tmp_path, monkeypatch) -> None:

    monkeypatch.setattr(obscura.paths, "WEIGHTS_DIR", tmp_path / "no-weights")
    psf = np.zeros((3, 5, 5))
    psf[:, 2, 2] = 2.0  # a point: imaging changes nothing but noise and quantisation
    np.save(tmp_path / "psf_point.npy", psf)
    method = get(f"psf:{tmp_path / 'psf_point.npy'}")
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    assert np.abs(method.apply(image).astype(int) - image).mean() < 3 and method.landmarks is None
    np.save(tmp_path / "flat.npy", np.zeros((5, 5)))
    with pytest.raises(ObscuraError, match="expected a finite, non-zero 3 x h x w"):
        get(f"psf:{tmp_path / 'flat.npy'}")
    with pytest.raises(ObscuraError, match="cannot read a PSF"):
        get(f"psf:{tmp_path / 'missing.npy'}")
