"""Privacy and utility metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from evaluation import metrics
from evaluation.evaluate import similarity
from faces.face_models import Face

# 2 probes x 3 gallery identities; genuine pairs 0.9 and 0.4, impostors 0.5, 0.1, 0.4, 0.2.
SCORES = np.array([[0.9, 0.5, 0.1], [0.4, 0.4, 0.2]])
LABELS = np.array([0, 1])


def test_rank1_counts_ties_as_wrong() -> None:
    correct = metrics.rank1_correct(SCORES, LABELS)
    assert correct.tolist() == [True, False]  # probe 1 ties its own identity with identity 0


def test_rank1_no_face_probe_is_wrong() -> None:
    scores = np.array([[metrics.NO_FACE_SCORE] * 3, [0.1, 0.8, 0.3]])
    assert metrics.rank1_correct(scores, np.array([0, 1])).tolist() == [False, True]


def test_verification_hand_computed() -> None:
    v = metrics.verification(metrics.pair_scores(SCORES, LABELS), far=0.25)
    # AUC: 0.9 beats 4 impostors; 0.4 beats 0.1 and 0.2 and ties 0.4 -> (4 + 2.5) / (2 * 4)
    assert v["auc"] == pytest.approx(6.5 / 8)
    # accept > 0.4: one impostor of four (FAR 0.25), genuine 0.9 only -> TAR 0.5
    assert v["tar_at_far"] == pytest.approx(0.5)
    # closest FAR/FRR at threshold 0.4: FAR 0.25, FRR 0.5
    assert v["eer"] == pytest.approx(0.375)


def test_verification_perfect_and_inverted() -> None:
    good = metrics.verification(metrics.pair_scores(np.eye(4), np.arange(4)))
    bad = metrics.verification(metrics.pair_scores(1 - np.eye(4), np.arange(4)))
    assert (good["auc"], good["eer"], good["tar_at_far"]) == (1.0, 0.0, 1.0)
    assert (bad["auc"], bad["tar_at_far"]) == (0.0, 0.0)
    assert bad["eer"] == pytest.approx(1.0)


def test_auc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(40, 7)), 1)  # rounded: many ties
    labels = rng.integers(0, 7, 40)
    pairs = metrics.pair_scores(scores, labels)
    gen = scores[np.arange(40), labels]
    mask = np.ones_like(scores, bool)
    mask[np.arange(40), labels] = False
    u = mannwhitneyu(gen, scores[mask]).statistic
    assert metrics.verification(pairs)["auc"] == pytest.approx(u / (gen.size * mask.sum()))


def test_weighted_verification_equals_duplicated_probes() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(30, 5))
    labels = rng.integers(0, 5, 30)
    weights = rng.integers(0, 3, 30).astype(float)
    rows = np.repeat(np.arange(30), weights.astype(int))
    weighted = metrics.verification(metrics.pair_scores(scores, labels), 0.05, weights)
    duplicated = metrics.verification(metrics.pair_scores(scores[rows], labels[rows]), 0.05)
    for key in ("auc", "eer", "tar_at_far"):
        assert weighted[key] == pytest.approx(duplicated[key])


def test_tar_at_far_1e_3_threshold() -> None:
    # one genuine per probe at 1.0 for the first 10 probes; 2,000 impostors, the top 3 above 0.99
    n = 2000
    scores = np.zeros((n, 2))
    labels = np.zeros(n, dtype=int)
    scores[:, 0] = np.linspace(0.0, 0.98, n)  # genuines
    scores[:10, 0] = 1.0
    scores[:, 1] = np.linspace(0.0, 0.9, n)  # impostors
    scores[:3, 1] = [0.995, 0.996, 0.997]
    v = metrics.verification(metrics.pair_scores(scores, labels), far=1e-3)
    # 2 impostors may be accepted (2 / 2000 = 1e-3): threshold 0.995 accepts 0.996, 0.997; TAR = 10 / 2000
    assert v["tar_at_far"] == pytest.approx(10 / n)


def test_bootstrap_interval_brackets_the_mean() -> None:
    correct = np.array([1.0] * 200 + [0.0] * 200)
    value, (lo, hi) = metrics.rank1_with_ci(correct, draws=500, seed=0)
    assert value == 0.5
    half = 1.96 * np.sqrt(0.25 / 400)  # normal approximation of the binomial interval
    assert lo == pytest.approx(0.5 - half, abs=0.015)
    assert hi == pytest.approx(0.5 + half, abs=0.015)
    assert metrics.rank1_with_ci(np.ones(50), draws=100)[1] == [1.0, 1.0]


def test_privacy_metrics_keys_and_intervals() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 4)
    scores = rng.normal(size=(20, 5)) * 0.1
    scores[np.arange(20), labels] += 1.0
    m = metrics.privacy_metrics(scores, labels, draws=200)
    assert m["rank1"] == 1.0 and m["auc"] == 1.0
    for key in ("rank1", "auc", "eer", "tar_at_far_1e-3"):
        lo, hi = m[f"{key}_ci95"]
        assert lo <= m[key] <= hi


def test_similarity_marks_missing_faces() -> None:
    probes = np.array([[1.0, 0.0], [np.nan, np.nan]])
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    s = similarity(probes, gallery)
    assert s.tolist() == [[1.0, 0.0, -1.0], [-1.0, -1.0, -1.0]]


def _face(x: float, y: float, marks: np.ndarray) -> Face:
    return Face(np.array([x, y, 10.0, 10.0]), marks, 1.0)


def test_utility_hand_computed() -> None:
    marks = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 8.0], [8.0, 8.0]])
    sources = [_face(0, 0, marks), _face(0, 0, marks), None, _face(0, 0, marks)]
    outputs = [_face(3, 4, marks + [3.0, 4.0]), _face(0, 0, marks), _face(1, 1, marks), None]
    u = metrics.utility(sources, outputs)
    assert u["fd"] == pytest.approx(2 / 3)  # the third source has no face, the fourth output none
    assert u["n_pairs"] == 2 and u["n_source_faces"] == 3
    assert u["bb"] == pytest.approx((5.0 + 0.0) / 2)
    assert u["lm"] == pytest.approx((3.5 + 0.0) / 2)
    assert u["nme"] == pytest.approx((5.0 / 10.0 + 0.0) / 2)  # inter-ocular 10 px (first two points)


def test_inter_ocular_68_points_uses_outer_corners() -> None:
    pts = np.zeros((68, 2))
    pts[36] = [10, 20]
    pts[45] = [70, 20]
    assert metrics.inter_ocular(pts) == 60.0


def test_landmark_nme_over_inter_ocular_distance() -> None:
    reference = np.zeros((68, 2))
    reference[45] = (10.0, 0.0)  # outer eye corners 36 and 45: inter-ocular distance 10
    shifted = reference + (3.0, 4.0)  # every point 5 px away
    result = metrics.landmark_nme([reference, None, reference], [shifted, shifted, None])
    assert result == {"landmark_nme": 0.5, "n_pairs": 1}
