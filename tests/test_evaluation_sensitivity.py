"""sensitivity: template movement and rank-1 against a modification's strength."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation import sensitivity
from evaluation.evaluate import Records
from evaluation.sensitivity import SensitivityConfig
from obscura.errors import ObscuraError


def _unit(v: list[float]) -> np.ndarray:
    return np.asarray(v, float) / np.linalg.norm(v)


def test_a_point_averages_the_cosine_distance_over_probes_with_both_faces_found() -> None:
    a, b = _unit([1, 0]), _unit([0, 1])
    gallery = [({"sface.emb": a}, {}), ({"sface.emb": b}, {})]
    probes = [
        ({"sface.emb": a}, {"sface.auto": a}),  # unmoved: distance 0, recognised
        ({"sface.emb": a}, {"sface.auto": b}),  # moved to the other identity: distance 1, wrong
        ({"sface.emb": b}, {}),  # no face after the method: left out of the distance, wrong
    ]
    rec = Records(None, gallery, probes, np.array([0, 0, 1]), ["p0", "p1", "p2"])  # type: ignore[arg-type]
    found = sensitivity.point(rec, "sface")
    assert found == {"cosine_distance": pytest.approx(0.5), "rank1": pytest.approx(1 / 3), "pairs": 2}


def test_bad_families_and_optic_points_are_one_line() -> None:
    with pytest.raises(ObscuraError, match="'families' has 'sharpen'"):
        sensitivity.sweeps(SensitivityConfig(families=["blur", "sharpen"]))
    with pytest.raises(ObscuraError, match="'optic' has 'weights'; expected LAMBDA_PRIV:RUN"):
        sensitivity.sweeps(SensitivityConfig(families=[], optic=["weights"]))


@pytest.mark.slow
def test_sface_templates_move_further_as_the_blur_grows(lfw_subset: Path, tmp_path: Path) -> None:
    cfg = SensitivityConfig(
        data=str(lfw_subset),
        out=str(tmp_path / "out"),
        families=["blur"],
        workers=1,
        progress=False,
        cache_dir=str(tmp_path),
    )
    points = sensitivity.run(cfg)["families"]["blur"]["points"]
    distances = [p["sface"]["cosine_distance"] for p in points]
    assert [p["strength"] for p in points] == [2, 4, 8]
    assert distances[0] < distances[1] < distances[2] and distances[0] < 0.3
    assert points[-1]["sface"]["rank1"] < points[0]["sface"]["rank1"]
    assert (tmp_path / "out" / "sensitivity.png").is_file()
