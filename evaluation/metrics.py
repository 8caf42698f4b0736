"""Privacy and utility metrics, with probe-resampling bootstrap intervals.

Scores are similarities (higher = more alike). Verification accepts a pair when its score is
strictly above the threshold; ties in the ROC AUC count one half (Mann-Whitney).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_FACE_SCORE = -1.0  # the lowest cosine similarity: a probe without a face matches nothing


def rank1_correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per probe: True when its own gallery identity scores strictly above every other identity.

    `scores` is probes x gallery; `labels` the gallery column of each probe. A tie at the top is
    wrong, so a probe with no face (all scores equal) is always wrong.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(scores.shape[0])
    own = scores[rows, labels]
    others = scores.copy()
    others[rows, labels] = -np.inf
    return own > others.max(axis=1)


@dataclass(frozen=True)
class PairScores:
    """Verification pairs reduced to unique score values with per-probe ownership, for fast bootstraps."""

    values: np.ndarray  # unique scores, ascending
    index: np.ndarray  # per pair: index into values
    genuine: np.ndarray  # per pair: same identity
    probe: np.ndarray  # per pair: probe row


def pair_scores(scores: np.ndarray, labels: np.ndarray) -> PairScores:
    """All probe-versus-gallery pairs of a probes x gallery score matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    n_probe, n_gallery = scores.shape
    genuine = np.zeros_like(scores, dtype=bool)
    genuine[np.arange(n_probe), np.asarray(labels)] = True
    values, index = np.unique(scores.ravel(), return_inverse=True)
    probe = np.repeat(np.arange(n_probe), n_gallery)
    return PairScores(values, index.ravel(), genuine.ravel(), probe)


def _weights_per_value(pairs: PairScores, probe_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor weight at each unique score (probe weights = bootstrap counts)."""
    w = np.ones(pairs.index.shape[0]) if probe_weights is None else np.asarray(probe_weights, float)[pairs.probe]
    n = pairs.values.shape[0]
    gen = np.bincount(pairs.index, weights=w * pairs.genuine, minlength=n)
    imp = np.bincount(pairs.index, weights=w * ~pairs.genuine, minlength=n)
    return gen, imp


def verification(pairs: PairScores, far: float = 1e-3, probe_weights: np.ndarray | None = None) -> dict[str, float]:
    """ROC AUC, EER and TAR at the given FAR of genuine versus impostor pairs.

    Thresholds run over the unique scores; "accept" means score > threshold. TAR@FAR uses the
    lowest threshold whose impostor acceptance is <= far. EER is the mean of FAR and FRR at the
    threshold where they are closest.
    """
    gen, imp = _weights_per_value(pairs, probe_weights)
    g_total, i_total = gen.sum(), imp.sum()
    if g_total == 0 or i_total == 0:
        return {"auc": float("nan"), "eer": float("nan"), "tar_at_far": float("nan")}
    imp_below = np.cumsum(imp) - imp
    auc = float(np.sum(gen * (imp_below + 0.5 * imp)) / (g_total * i_total))
    # accept "> values[j]": impostors and genuines strictly above each unique value
    imp_above = i_total - np.cumsum(imp)
    gen_above = g_total - np.cumsum(gen)
    far_j = imp_above / i_total
    frr_j = 1.0 - gen_above / g_total
    # thresholds below every score accept all pairs: FAR 1, FRR 0
    far_all = np.concatenate([[1.0], far_j])
    frr_all = np.concatenate([[0.0], frr_j])
    k = int(np.argmin(np.abs(far_all - frr_all)))
    eer = float((far_all[k] + frr_all[k]) / 2)
    ok = np.nonzero(far_all <= far + 1e-12)[0]
    tar = float(1.0 - frr_all[ok[0]]) if ok.size else 0.0
    return {"auc": auc, "eer": eer, "tar_at_far": tar}


def bootstrap_counts(n: int, draws: int, seed: int) -> np.ndarray:
    """draws x n multiplicities of resampling n items with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(draws)]).astype(np.float64)


def interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of bootstrap samples."""
    lo, hi = np.nanpercentile(np.asarray(samples, float), [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def privacy_metrics(
    scores: np.ndarray, labels: np.ndarray, far: float = 1e-3, draws: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Rank-1, AUC, EER and TAR@FAR of a probes x gallery score matrix, with 95 % bootstrap intervals."""
    correct = rank1_correct(scores, labels)
    pairs = pair_scores(scores, labels)
    point = verification(pairs, far)
    rank1, rank1_ci = rank1_with_ci(correct, draws, seed)
    ver_s = [verification(pairs, far, c) for c in bootstrap_counts(correct.shape[0], draws, seed)]
    return {
        "rank1": rank1,
        "rank1_ci95": rank1_ci,
        "auc": point["auc"],
        "auc_ci95": interval([v["auc"] for v in ver_s]),
        "eer": point["eer"],
        "eer_ci95": interval([v["eer"] for v in ver_s]),
        "tar_at_far_1e-3": point["tar_at_far"],
        "tar_at_far_1e-3_ci95": interval([v["tar_at_far"] for v in ver_s]),
    }


def rank1_with_ci(correct: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, list[float]]:
    """Mean of a per-probe correctness vector and its 95 % bootstrap interval."""
    correct = np.asarray(correct, dtype=np.float64)
    counts = bootstrap_counts(correct.shape[0], draws, seed)
    return float(correct.mean()), interval(counts @ correct / counts.sum(axis=1))


def inter_ocular(landmarks: np.ndarray) -> float:
    """Inter-ocular distance: outer eye corners (36, 45) for 68 points, eye centres for 5 points."""
    p = np.asarray(landmarks, dtype=np.float64)
    a, b = (p[36], p[45]) if p.shape[0] == 68 else (p[0], p[1])
    return float(np.linalg.norm(a - b))


def utility(sources: list, outputs: list) -> dict[str, float | int]:
    """FD, BB, LM and NME between source and output detections (each a Face or None).

    FD = share of sources with a face whose output also has one; BB = mean distance between box
    centres (px); LM = mean absolute landmark coordinate difference (px); NME = mean landmark
    distance over the source's inter-ocular distance. BB, LM and NME are over pairs where both exist.
    """
    pairs = [(s, o) for s, o in zip(sources, outputs) if s is not None]
    both = [(s, o) for s, o in pairs if o is not None]
    if not both:
        nan = float("nan")
        return {
            "fd": 0.0 if pairs else nan,
            "bb": nan,
            "lm": nan,
            "nme": nan,
            "n_source_faces": len(pairs),
            "n_pairs": 0,
        }
    bb = [float(np.linalg.norm(s.centre - o.centre)) for s, o in both]
    lm = [float(np.mean(np.abs(s.landmarks - o.landmarks))) for s, o in both]
    nme = [
        float(np.mean(np.linalg.norm(s.landmarks - o.landmarks, axis=1)) / max(inter_ocular(s.landmarks), 1e-9))
        for s, o in both
    ]
    return {
        "fd": len(both) / len(pairs),
        "bb": float(np.mean(bb)),
        "lm": float(np.mean(lm)),
        "nme": float(np.mean(nme)),
        "n_source_faces": len(pairs),
        "n_pairs": len(both),
    }


def landmark_nme(references: list, predictions: list) -> dict[str, float | int]:
    """Mean landmark distance over the reference's inter-ocular distance, over images with both (68 x 2 each)."""
    both = [(r, p) for r, p in zip(references, predictions) if r is not None and p is not None]
    errors = [
        float(np.mean(np.linalg.norm(np.asarray(p, float) - np.asarray(r, float), axis=1))) / max(inter_ocular(r), 1e-9)
        for r, p in both
    ]
    return {"landmark_nme": float(np.mean(errors)) if errors else float("nan"), "n_pairs": len(both)}


def impostor_scores(templates: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine scores of every pair of unit templates (each pair once) whose identities differ."""
    t = np.asarray(templates, dtype=np.float64)
    labels = np.asarray(labels)
    rows, cols = np.triu_indices(len(t), k=1)
    other = labels[rows] != labels[cols]
    return (t @ t.T)[rows[other], cols[other]]


def threshold_at_fmr(impostors: np.ndarray, fmr: float) -> float:
    """The lowest threshold t, among the impostor scores, at which accepting score > t lets through at most `fmr` of them."""
    ranked = np.sort(np.asarray(impostors, dtype=np.float64))[::-1]
    if ranked.size == 0:
        raise ValueError("no impostor pairs to set a threshold on")
    return float(ranked[min(int(np.floor(fmr * ranked.size)), ranked.size - 1)])


def acceptance(scores: np.ndarray, threshold: float) -> float:
    """Share of scores above the threshold (nan for none): the reversibility success rate of rebuilt-versus-source scores."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.mean(scores > threshold)) if scores.size else float("nan")
