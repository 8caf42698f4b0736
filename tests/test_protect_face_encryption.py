"""Face Encryption (FGSM / PGD by torchattacks) against the committed in-house classifier, on the scikit-image face."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from torch.nn import functional as F

from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect import face_encryption, registry


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, cropped and sized like a 160 px celeba-crops image."""
    return cv2.resize(skimage.data.astronaut()[30:230, 125:325], (160, 160), interpolation=cv2.INTER_AREA)


def _logits(image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return face_encryption.classifier("")(from_uint8(image)[None])


def test_a_pgd_step_increases_the_classifier_loss(face: np.ndarray, one_torch_thread: None) -> None:
    labels = _logits(face).argmax(dim=1)
    protected = registry.get("pgd:steps=1,random_start=false,epsilon=0.0157").apply(face)
    assert F.cross_entropy(_logits(protected), labels) > F.cross_entropy(_logits(face), labels) + 0.1


@pytest.mark.parametrize("spec", ["fgsm:epsilon=0.0157", "fgsm:epsilon=0.01", "pgd:epsilon=0.0314,steps=3"])
def test_epsilon_is_respected_exactly_in_8_bits(spec: str, face: np.ndarray, one_torch_thread: None) -> None:
    protection = registry.get(spec)
    levels = int(protection.options.epsilon * 255 + 1e-6)
    change = np.abs(protection.apply(face).astype(int) - face)
    assert change.max() == levels  # the bound is reached (FGSM moves every pixel of the crop by epsilon) ...
    assert change[:16].max() == 0 and change[:, :16].max() == 0  # ... and only the crop the classifier reads moves


def test_the_protection_is_the_same_when_called_without_gradients(face: np.ndarray, one_torch_thread: None) -> None:
    protection = registry.get("pgd:epsilon=0.0157,steps=2")
    with torch.no_grad():
        quiet = protection.apply(face)
    assert np.array_equal(quiet, protection.apply(face)) and not np.array_equal(quiet, face)


def test_targeted_pgd_makes_the_classifier_answer_the_target(face: np.ndarray, one_torch_thread: None) -> None:
    clean = _logits(face)
    target = int(clean.argmin())
    protected = registry.get(f"pgd-targeted:epsilon=0.0314,target={target}").apply(face)
    assert int(_logits(protected).argmax()) == target != int(clean.argmax())


def test_bad_options_are_one_line(face: np.ndarray) -> None:
    with pytest.raises(ObscuraError, match="'epsilon' is 1.5; expected a value in"):
        registry.get("pgd:epsilon=1.5")
    with pytest.raises(ObscuraError, match="option 'target' is 100000: the classifier knows"):
        registry.get("pgd-targeted:target=100000").apply(face)
    with pytest.raises(ObscuraError, match="option 'classifier' is 'nowhere.pt': no such file"):
        registry.get("fgsm:classifier=nowhere.pt")


def test_a_missing_torchattacks_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # what an install without it looks like to import
    with pytest.raises(ObscuraError, match="needs torchattacks: pip install --no-deps torchattacks==3.5.1"):
        registry.get("fgsm")
