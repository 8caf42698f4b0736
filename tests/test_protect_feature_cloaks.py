"""LowKey- and Fawkes-style feature cloaks against the committed in-house ensemble, on the scikit-image face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from torch.nn import functional as F

from faces.face_models import recognitions
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect import feature_cloaks, registry
from protect.face_encryption import CentreCropClassifier
from protect.protection import ssim_8bit


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, cropped and sized like a 160 px celeba-crops image."""
    return cv2.resize(skimage.data.astronaut()[30:230, 125:325], (160, 160), interpolation=cv2.INTER_AREA)


def _templates(image: np.ndarray) -> list[torch.Tensor]:
    rows, cols = CentreCropClassifier.crop_box(*image.shape[:2])
    crop = from_uint8(image[rows, cols])[None]
    with torch.no_grad():
        return [feature_cloaks.templates(m, crop)[0] for m in feature_cloaks.ensemble(())]


@pytest.mark.parametrize("spec", ["lowkey:ssim=1.0", "lowkey:epsilon=0", "fawkes:dssim=0", "fawkes:steps=0"])
def test_a_cloak_with_zero_budget_returns_the_image_unchanged(spec: str, face: np.ndarray) -> None:
    assert np.array_equal(registry.get(spec).apply(face), face)


def test_lowkey_moves_every_white_box_template_and_keeps_its_ssim(face: np.ndarray, one_torch_thread: None) -> None:
    cloaked = registry.get("lowkey:steps=15").apply(face)
    assert len(feature_cloaks.ensemble(())) == 2  # the committed ensemble: two seeds
    for clean, moved in zip(_templates(face), _templates(cloaked)):
        assert float(clean @ moved) < 0.8  # the clean face's templates agree with themselves (1.0)
    assert 0.90 <= ssim_8bit(face, cloaked) < 0.95  # the budget is spent, and kept in 8 bits
    changed = np.abs(cloaked.astype(int) - face).max(axis=2)
    assert changed[:16].max() == 0 and changed[:, :16].max() == 0  # only the crop the recognisers read moves


def test_a_tighter_ssim_budget_is_kept(face: np.ndarray, one_torch_thread: None) -> None:
    cloaked = registry.get("lowkey:steps=10,ssim=0.97").apply(face)
    assert 0.97 <= ssim_8bit(face, cloaked) and not np.array_equal(cloaked, face)


def test_fawkes_pulls_the_template_toward_the_least_similar_identity(face: np.ndarray, one_torch_thread: None) -> None:
    models = feature_cloaks.ensemble(())
    centres = [F.normalize(m.head.weight) for m in models]
    target = int(sum(c @ t for c, t in zip(centres, _templates(face))).argmin())
    cloaked = registry.get("fawkes:steps=15").apply(face)
    before = [float(c[target] @ t) for c, t in zip(centres, _templates(face))]
    after = [float(c[target] @ t) for c, t in zip(centres, _templates(cloaked))]
    assert all(a > b + 0.3 for a, b in zip(after, before))
    assert ssim_8bit(face, cloaked) >= 0.90


def test_the_cloak_is_repeatable_and_works_without_gradients(face: np.ndarray, one_torch_thread: None) -> None:
    protection = registry.get("lowkey:steps=3")
    with torch.no_grad():
        quiet = protection.apply(face)
    assert np.array_equal(quiet, protection.apply(face)) and not np.array_equal(quiet, face)


def test_the_white_box_sface_member_is_opencvs_sface(face: np.ndarray, one_torch_thread: None) -> None:
    rows, cols = CentreCropClassifier.crop_box(*face.shape[:2])
    member = feature_cloaks.sface_member(face, (cols.start, rows.start))
    assert member is not None
    with torch.no_grad():
        ours = member(from_uint8(face[rows, cols])[None])[0].double().numpy()
    sface = recognitions()["sface"]
    opencv = sface.embed(face, sface.detector.detect(face).central(face.shape))
    assert float(ours @ opencv) > 0.999  # the same aligned crop, the same network


def test_bad_options_are_one_line(face: np.ndarray) -> None:
    with pytest.raises(ObscuraError, match="'ssim' is 1.5; expected a value in"):
        registry.get("lowkey:ssim=1.5")
    with pytest.raises(ObscuraError, match="no such file"):
        registry.get("fawkes", ["recognisers=[/nonexistent.pt]"])
