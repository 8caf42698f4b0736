"""judge-p3mask on real faces: splits by user, the focal-diversity ensemble, the verdict table."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation import p3mask_judge
from evaluation.p3mask_judge import P3JudgeConfig
from obscura.errors import ObscuraError


def _config(shared_data: Path, tmp_path: Path, **changes) -> P3JudgeConfig:
    split = tmp_path / "users.txt"
    split.write_text("7202\n7205\n7213\n")
    cfg = P3JudgeConfig(
        data=str(shared_data / "celeba-crops"), out=str(tmp_path / "out"), split=str(split), progress=False
    )
    cfg.mask.epochs = 2
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_each_users_images_are_split_disjointly_and_repeatably(shared_data: Path, tmp_path: Path) -> None:
    users = p3mask_judge.split_users(_config(shared_data, tmp_path))
    assert [u.name for u in users] == ["7202", "7205", "7213"]
    for u in users:
        assert len({*u.train, u.gallery, *u.probes}) == len(u.train) + 1 + len(u.probes) and u.probes
    assert users == p3mask_judge.split_users(_config(shared_data, tmp_path))


def test_a_missing_candidate_is_one_line(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ObscuraError, match="'candidates' names '/nonexistent.pt'"):
        p3mask_judge.run(_config(shared_data, tmp_path, candidates=["/nonexistent.pt"]))


@pytest.mark.slow
def test_the_judgement_reports_every_variant_and_resumes_from_its_masks(shared_data: Path, tmp_path: Path) -> None:
    cfg = _config(shared_data, tmp_path)
    result = p3mask_judge.run(cfg)
    assert len(result["ensemble"]) >= 2 and result["masks_learned_this_run"] == 3
    assert result["ssim_min"] >= 0.94
    for judge in ("sface", "dlib"):
        found = result["judges"][judge]
        assert set(found) == set(p3mask_judge.VARIANTS)
        assert found["clean"]["rank1"] >= 0.6  # the recognisers know these users on clean probes
        assert abs(found["key_removed"]["rank1"] - found["clean"]["rank1"]) <= 0.1
    again = p3mask_judge.run(cfg)
    assert again["masks_learned_this_run"] == 0 and again["judges"] == result["judges"]
