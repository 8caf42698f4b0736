"""P3-masks: one mask per user, its budget, the mask as a key, the per-user protect path, and focal diversity."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from evaluation import methods
from faces.face_sets import read_rgb
from obscura.errors import ObscuraError
from protect import focal_diversity, p3_mask, registry
from protect.feature_cloaks import ensemble, templates
from protect.protect_folder import protect_folder
from protect.protection import ssim_8bit


@pytest.fixture(scope="module")
def user() -> list[np.ndarray]:
    """Four images of one "user": the astronaut's face cropped at slightly different places, 160 px."""
    photo = skimage.data.astronaut()
    return [
        cv2.resize(photo[30 + dy : 230 + dy, 125 + dx : 325 + dx], (160, 160), interpolation=cv2.INTER_AREA)
        for dy, dx in ((0, 0), (6, -4), (-5, 5), (3, 8))
    ]


def _crop_templates(images: list[np.ndarray]) -> list[torch.Tensor]:
    crops = p3_mask.crops_of(images, 128)
    with torch.no_grad():
        return [templates(m, crops) for m in ensemble(())]


def test_one_mask_moves_every_image_of_the_user_within_the_ssim_budget(
    user: list[np.ndarray], one_torch_thread
) -> None:
    mask = p3_mask.learn_mask(user, p3_mask.P3MaskOptions(epochs=6))
    assert mask.shape == (128, 128, 3) and np.abs(mask).max() <= 16.0 + 1e-6 and np.abs(mask).max() > 0
    masked = [p3_mask.apply_mask(image, mask) for image in user]
    assert min(ssim_8bit(a, b) for a, b in zip(user, masked)) >= 0.94
    for clean, moved in zip(_crop_templates(user), _crop_templates(masked)):
        assert float((clean * moved).sum(dim=1).mean()) < 0.95  # the same mask moves every image's template


def test_the_mask_is_a_key_and_zero_budget_is_no_mask(user: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(-16, 17, (128, 128, 3)).astype(np.float32)
    image = np.clip(user[0], 20, 235).astype(np.uint8)  # nothing clips at 0 or 255 under a 16-level mask
    assert np.array_equal(p3_mask.remove_mask(p3_mask.apply_mask(image, mask), mask), image)
    outside = p3_mask.apply_mask(image, mask).astype(int) - image
    assert np.abs(outside[:16]).max() == 0 and np.abs(outside[16:144, 16:144]).max() == 16  # only the crop
    for options in (p3_mask.P3MaskOptions(epsilon=0), p3_mask.P3MaskOptions(dssim=0), p3_mask.P3MaskOptions(epochs=0)):
        assert not p3_mask.learn_mask(user, options).any()


def test_a_per_user_protection_is_refused_as_an_image_method(user: list[np.ndarray]) -> None:
    with pytest.raises(ObscuraError, match="one mask per user"):
        registry.get("p3mask").apply(user[0])
    with pytest.raises(ObscuraError, match="per-user protection"):
        methods.get("p3mask")


def test_protect_learns_one_mask_per_identity_folder_and_resumes(user: list[np.ndarray], tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, images in (("ann", user[:2]), ("ben", user[2:])):
        (data / name).mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(data / name / f"{i}.png"), image[:, :, ::-1])
    first = protect_folder("p3mask", data, tmp_path / "out", ["epochs=2"], progress=False)
    assert first["keys_learned_this_run"] == 2 and first["images"] == 4 and first["ssim_min"] >= 0.94
    key = np.load(tmp_path / "out" / "ann" / p3_mask.KEY_FILE)
    clean = read_rgb(data / "ann" / "1.png")[0]
    assert np.array_equal(read_rgb(tmp_path / "out" / "ann" / "1.png")[0], p3_mask.apply_mask(clean, key))
    again = protect_folder("p3mask", data, tmp_path / "out", ["epochs=2"], progress=False)
    assert again["keys_learned_this_run"] == 0 and again["images_protected_this_run"] == 0


def test_generalized_diversity_is_0_for_shared_failures_and_1_for_disjoint_ones() -> None:
    together = np.array([[1, 1], [1, 1], [0, 0]], bool)
    apart = np.array([[1, 0], [0, 1], [0, 0]], bool)
    assert focal_diversity.generalized_diversity(together) == 0.0
    assert focal_diversity.generalized_diversity(apart) == 1.0
    assert focal_diversity.focal_diversity(apart) == 1.0 and focal_diversity.focal_diversity(together) == 0.0


def test_the_team_of_models_that_fail_differently_is_chosen() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.3
    failures = np.stack([a, a, rng.random(400) < 0.3], axis=1)  # model 1 is a copy of model 0
    team, scores = focal_diversity.best_team(failures)
    assert team in ((0, 2), (1, 2)) and scores["0,1"] == 0.0
    with pytest.raises(ObscuraError, match="at least 2 candidate"):
        focal_diversity.best_team(failures[:, :1])
