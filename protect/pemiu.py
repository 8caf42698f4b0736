"""PE-MIU template protection (Terhoerst et al. 2020): secret block permutations, compared after Hungarian re-alignment.

A D-dimensional template is cut into D / block blocks of `block` consecutive values; a secret
permutation, drawn afresh for every enrolment, moves `permuted` of them (chosen at random, all
moved: one random cycle through them). Training-free: nothing is learned. Two protected
templates are compared by re-ordering the probe's blocks onto the reference's with the
assignment (Hungarian, `scipy.optimize.linear_sum_assignment`) that minimises the summed
Euclidean distance between paired blocks, and taking the cosine of the re-ordered probe and the
reference. For templates of one person the right pairing is the cheapest one, so the score is
the unprotected cosine; for two people the assignment finds the closest pairing it can, which
raises impostor scores a little: the cost of the protection, larger for smaller blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from obscura.errors import ObscuraError

NONE = "none"


@dataclass(frozen=True)
class PeMiu:
    """A PE-MIU setting for D-dimensional templates: block size and how many blocks the secret permutation moves."""

    dim: int
    block: int
    permuted: int

    @property
    def n_blocks(self) -> int:
        """Blocks per template."""
        return self.dim // self.block

    @property
    def label(self) -> str:
        """The spec that names this setting: pemiu:BLOCK:PERMUTED."""
        return f"pemiu:{self.block}:{self.permuted}"

    def key(self, rng: np.random.Generator) -> np.ndarray:
        """A secret block order: `permuted` blocks chosen at random, each moved to the next one's place along a random cycle."""
        order = np.arange(self.n_blocks)
        if self.permuted:
            chosen = rng.choice(self.n_blocks, self.permuted, replace=False)
            order[chosen] = np.roll(chosen, 1)
        return order

    def protect(self, template: np.ndarray, order: np.ndarray) -> np.ndarray:
        """The template (..., D) with its blocks put in the key's order."""
        blocks = np.asarray(template).reshape(*np.shape(template)[:-1], self.n_blocks, self.block)
        return blocks[..., order, :].reshape(np.shape(template))

    def protect_all(self, templates: np.ndarray, seed: int) -> np.ndarray:
        """Each template (N x D) with its own fresh key, drawn from `seed` (row i from seed and i)."""
        return np.stack([self.protect(t, self.key(np.random.default_rng([seed, i]))) for i, t in enumerate(templates)])


def parse(spec: str, dim: int) -> PeMiu | None:
    """`none` -> None; `pemiu:BLOCK:PERMUTED` -> a PeMiu for D-dimensional templates; anything else one line naming it."""
    if spec == NONE:
        return None
    parts = spec.split(":")
    expected = f"expected none or pemiu:BLOCK:PERMUTED with BLOCK dividing the template's {dim} values"
    if len(parts) != 3 or parts[0] != "pemiu" or not all(p.isdigit() for p in parts[1:]):
        raise ObscuraError(f"--protect {spec!r}: {expected}")
    block, permuted = int(parts[1]), int(parts[2])
    if block < 1 or dim % block:
        raise ObscuraError(f"--protect {spec!r}: block {block} does not divide the {dim}-d template; {expected}")
    n_blocks = dim // block
    if permuted > n_blocks or permuted == 1:
        raise ObscuraError(
            f"--protect {spec!r}: {permuted} permuted blocks; a {dim}-d template has {n_blocks} blocks of {block}: "
            f"expected 0 or 2..{n_blocks} (one block alone cannot move)"
        )
    return PeMiu(dim, block, permuted)


def realign(probe: np.ndarray, reference: np.ndarray, block: int) -> np.ndarray:
    """The probe (D) with its blocks re-ordered onto the reference's by the minimum-distance assignment."""
    p, r = np.asarray(probe).reshape(-1, block), np.asarray(reference).reshape(-1, block)
    rows, cols = linear_sum_assignment(cdist(r, p))
    out = np.empty_like(p)
    out[rows] = p[cols]
    return out.reshape(-1)


def compare(probe: np.ndarray, reference: np.ndarray, block: int) -> float:
    """PE-MIU comparison score: the cosine of the re-aligned probe and the reference."""
    aligned = realign(probe, reference, block)
    ref = np.asarray(reference).reshape(-1)
    return float(aligned @ ref / max(np.linalg.norm(aligned) * np.linalg.norm(ref), 1e-12))


def score_matrix(probes: np.ndarray, references: np.ndarray, block: int) -> np.ndarray:
    """probes x references PE-MIU comparison scores (one assignment per pair)."""
    return np.array([[compare(p, r, block) for r in references] for p in probes])
