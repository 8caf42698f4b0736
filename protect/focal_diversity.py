"""Ensemble choice by focal diversity (Wu et al., CVPR 2021): the team whose members fail on different faces.

For a team and one member taken as the focal model, look only at the samples the focal model gets
wrong, and measure how far the others fail there too by the generalized diversity of Partridge and
Krzanowski, GD = 1 - p(2) / p(1), where p(k) is the chance that k members drawn at random (without
replacement) all fail on a random sample. The team's focal diversity is the mean of GD over its
focal models; a team of models that fail together scores 0, one whose failures never coincide 1.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from obscura.errors import ObscuraError


def generalized_diversity(failures: np.ndarray) -> float:
    """GD of a samples x models boolean failure matrix (0 where no sample fails at all)."""
    members = failures.shape[1]
    wrong = failures.sum(axis=1).astype(np.float64)  # how many members fail on each sample
    p1 = float(np.mean(wrong / members))
    p2 = float(np.mean(wrong * (wrong - 1) / (members * (members - 1))))
    return 0.0 if p1 == 0 else 1.0 - p2 / p1


def focal_diversity(failures: np.ndarray) -> float:
    """Mean over focal members of GD on the samples that member fails on (members without failures are skipped)."""
    scores = [generalized_diversity(failures[failures[:, j]]) for j in range(failures.shape[1]) if failures[:, j].any()]
    return float(np.mean(scores)) if scores else 0.0


def best_team(failures: np.ndarray, min_size: int = 2) -> tuple[tuple[int, ...], dict[str, float]]:
    """The team (column indices) of at least `min_size` members with the highest focal diversity, and every team's score.

    Ties go to the team that fails least often on average (the more accurate one).
    """
    members = failures.shape[1]
    if members < min_size:
        raise ObscuraError(f"focal diversity needs at least {min_size} candidate recognisers; got {members}")
    scored = {}
    for size in range(min_size, members + 1):
        for team in combinations(range(members), size):
            scored[team] = (focal_diversity(failures[:, list(team)]), -float(failures[:, list(team)].mean()))
    chosen = max(scored, key=lambda team: scored[team])
    return chosen, {",".join(map(str, team)): score[0] for team, score in scored.items()}
