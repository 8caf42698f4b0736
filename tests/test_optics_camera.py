"""Camera, presets and the saved-optic file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obscura.errors import ObscuraError
from optics.optic_file import load_optic, read_optic, save_optic
from optics.presets import camera_from_spec

# Accuracy is tested elsewhere; small grids here may undersample random masks on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::optics.propagation.SamplingWarning")

SMALL = {"psf_size": 64, "pupil_samples": 128}


@pytest.mark.parametrize("spec", ["lens", "defocus", "zernike-random"])
def test_presets_capture_contract(spec: str) -> None:
    camera = camera_from_spec(spec, **SMALL)
    scene = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        capture = camera(scene)
        psf = camera.psf()
    assert capture.shape == scene.shape and capture.dtype == scene.dtype
    assert 0 <= float(capture.min()) and float(capture.max()) <= 1
    assert psf.shape == (3, 64, 64)
    assert torch.allclose(psf.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    trainable = {name for name, p in camera.named_parameters() if p.requires_grad}
    assert trainable == ({"optic.mask.surface.coefficients_um"} if spec == "zernike-random" else set())


def test_blur_ordering_of_presets() -> None:
    peaks = {
        spec: float(camera_from_spec(spec, **SMALL).optic.psf().detach().amax())
        for spec in ("lens", "zernike-random", "defocus")
    }
    assert peaks["lens"] > peaks["zernike-random"] > peaks["defocus"]


def test_noise_is_reproducible_and_switchable() -> None:
    scene = torch.full((1, 3, 32, 32), 0.5)
    a = camera_from_spec("lens", seed=3, **SMALL)
    b = camera_from_spec("lens", seed=3, **SMALL)
    with torch.no_grad():
        assert torch.equal(a(scene), b(scene))
        fresh = camera_from_spec("lens", noise_seed=None, **SMALL)
        assert not torch.equal(fresh(scene), fresh(scene))
        noisy = a(scene)
        a.noise = False
        clean = a(scene)
        assert torch.equal(clean, a(scene))
        # Shot noise of 0.5 x 10000 e- is 71 e- (0.7 % of full scale); quantisation alone is < 0.1 %.
        assert 0.005 < float((noisy - clean).std()) < 0.01


def test_random_mask_depends_on_seed() -> None:
    one = camera_from_spec("zernike-random", seed=1, **SMALL).optic.mask.surface.coefficients_um
    two = camera_from_spec("zernike-random", seed=2, **SMALL).optic.mask.surface.coefficients_um
    again = camera_from_spec("zernike-random", seed=1, **SMALL).optic.mask.surface.coefficients_um
    assert torch.equal(one, again) and not torch.equal(one, two)


def test_psf_cache_follows_parameter_updates() -> None:
    camera = camera_from_spec("zernike-random", **SMALL)
    with torch.no_grad():
        before = camera.psf().clone()
        camera.optic.mask.surface.coefficients_um.mul_(2.0)
        after = camera.psf()
    assert not torch.allclose(before, after)
    assert torch.allclose(after, camera.optic.psf().detach())


def test_gradients_reach_the_optic() -> None:
    camera = camera_from_spec("zernike-random", **SMALL)
    camera(torch.rand(1, 3, 32, 32)).mean().backward()
    grad = camera.optic.mask.surface.coefficients_um.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_float64_camera() -> None:
    camera = camera_from_spec("zernike-random", **SMALL).double()
    out = camera(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    assert out.dtype == torch.float64 and camera.psf().dtype == torch.float64


def test_bad_scenes() -> None:
    camera = camera_from_spec("lens", **SMALL)
    with pytest.raises(ObscuraError, match="dtype torch.uint8"):
        camera(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ObscuraError, match="1 channels"):
        camera(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ObscuraError, match="spec is 'fisheye'"):
        camera_from_spec("fisheye")
    with pytest.raises(ObscuraError, match="unknown config key 'optic.zoom'"):
        camera_from_spec("lens", optic__zoom=2)


def test_optic_file_round_trip(tmp_path) -> None:
    camera = camera_from_spec("zernike-random", seed=4, **SMALL)
    path = save_optic(tmp_path / "optic.npz", camera)
    saved = read_optic(path)
    assert saved.config.optic.mask.kind == "zernike" and saved.config.optic.psf_size == 64
    with np.load(path) as data:
        assert data["height_m"].shape == (128, 128)
    restored = camera_from_spec(str(path))
    with torch.no_grad():
        assert torch.equal(restored.psf(), camera.psf())
    assert torch.equal(load_optic(path).mask.surface.coefficients_um, camera.optic.mask.surface.coefficients_um)
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic write left no temporary file


def test_optic_file_refuses_bad_files(tmp_path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ObscuraError, match="not a readable Obscura optic"):
        read_optic(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ObscuraError, match="not a readable Obscura optic"):
        read_optic(foreign)
    with pytest.raises(ObscuraError, match="does not exist"):
        read_optic(tmp_path / "missing.npz")
    path = save_optic(tmp_path / "optic.npz", camera_from_spec("zernike-random", **SMALL))
    with pytest.raises(ObscuraError, match="has shape"):
        camera_from_spec(str(path), optic__mask__num_terms=10)
