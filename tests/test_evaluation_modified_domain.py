"""recognise-modified: the 2x2 gallery x probe protocol, and the Laplace mechanism on stored templates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from evaluation import modified_domain
from evaluation.evaluate import EvaluateConfig
from evaluation.evaluate import run as evaluate_run
from evaluation.modified_domain import ModifiedDomainConfig
from obscura.errors import ObscuraError
from protect.laplace_templates import dp_epsilon, noisy_templates


def test_the_laplace_mechanisms_empirical_scale_matches_b() -> None:
    templates = np.zeros((200, 128))
    for b in (0.01, 0.1, 0.5):
        noise = noisy_templates(templates, b, np.random.default_rng(1)) - templates
        # Laplace(0, b): E|x| = b and Var x = 2 b^2
        assert abs(np.abs(noise).mean() / b - 1) < 0.02
        assert abs(noise.var() / (2 * b * b) - 1) < 0.05
        assert abs(np.median(noise)) < 0.02 * b


def test_zero_scale_stores_the_templates_as_they_are_and_epsilon_says_so() -> None:
    templates = np.random.default_rng(0).normal(size=(3, 128))
    assert np.array_equal(noisy_templates(templates, 0.0, np.random.default_rng(0)), templates)
    assert dp_epsilon(128, 0.0) == math.inf
    assert dp_epsilon(128, 0.5) == pytest.approx(2 * math.sqrt(128) / 0.5)
    with pytest.raises(ObscuraError, match="Laplace scale is -0.1"):
        noisy_templates(templates, -0.1, np.random.default_rng(0))


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ObscuraError, match="'laplace_scales' has -1"):
        modified_domain.check(ModifiedDomainConfig(data="d", out="o", laplace_scales=[0.1, -1.0]))
    with pytest.raises(ObscuraError, match="'inhouse' is '/nonexistent.pt': no such file"):
        modified_domain.check(ModifiedDomainConfig(data="d", out="o", inhouse="/nonexistent.pt"))
    with pytest.raises(ObscuraError, match="unknown method"):
        modified_domain.check(ModifiedDomainConfig(data="d", out="o", method="no-such-method"))


def _modified(data: Path, method: str, out: Path) -> dict:
    cfg = ModifiedDomainConfig(
        data=str(data), method=method, out=str(out), workers=1, bootstrap=20, progress=False, cache_dir=str(out.parent)
    )
    return modified_domain.run(cfg)


@pytest.mark.slow
def test_the_table_of_the_identity_method_is_the_clean_protocol_in_all_four_cells(
    lfw_subset: Path, tmp_path: Path
) -> None:
    table = _modified(lfw_subset, "clean", tmp_path / "clean")
    cfg = EvaluateConfig(
        data=str(lfw_subset),
        method="clean",
        out=str(tmp_path / "eval"),
        min_images=2,
        workers=1,
        bootstrap=20,
        progress=False,
        cache_dir=str(tmp_path),
        examples=0,
    )
    clean = evaluate_run(cfg)["privacy"]
    for judge in ("sface", "dlib"):
        for gallery in ("gallery_clean", "gallery_modified"):
            for probes in ("probes_clean", "probes_modified"):
                found = table["tables"][judge][gallery][probes]
                assert found["rank1"] == clean[judge]["rank1"]
                assert found["tar_at_far_1e-3"] == clean[judge]["tar_at_far_1e-3"]
    inhouse = table["tables"]["inhouse"]
    cells = [
        inhouse[g][p]["rank1"]
        for g in ("gallery_clean", "gallery_modified")
        for p in ("probes_clean", "probes_modified")
    ]
    assert len(set(cells)) == 1 and table["n_probes"] == 16
    assert inhouse["probes_without_face"] == {"clean": 0, "modified": 0}  # it reads every crop whole
    assert (
        table["laplace"]["sface"][0]["scale"] == 0 and table["laplace"]["sface"][0]["rank1"] == clean["sface"]["rank1"]
    )
    assert (tmp_path / "clean" / "modified_domain.png").is_file() and (tmp_path / "clean" / "config.yaml").is_file()


@pytest.mark.slow
def test_blur_and_laplace_noise_each_lower_sfaces_rank1_from_the_clean_protocol(
    lfw_subset: Path, tmp_path: Path
) -> None:
    found = _modified(lfw_subset, "blur4", tmp_path / "blur4")
    sface = found["tables"]["sface"]
    clean = sface["gallery_clean"]["probes_clean"]["rank1"]
    assert clean >= 0.9
    assert sface["gallery_clean"]["probes_modified"]["rank1"] < clean  # blur hides something from a clean gallery
    strongest = found["laplace"]["sface"][-1]
    assert strongest["scale"] == 0.5 and strongest["rank1"] < clean  # noise of scale 0.5 on 128-d unit templates
