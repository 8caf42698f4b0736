"""The Laplace mechanism on stored templates: each coordinate of a unit template plus Laplace(0, b) noise.

A template database protected this way is what the "differential privacy" evaluations of face
templates measure. The epsilon it buys is stated beside it: two unit templates in d dimensions
differ by at most 2 sqrt(d) in L1, so noise of scale b gives epsilon = 2 sqrt(d) / b per template,
which at the scales where recognition still works is far too large to mean anything.
"""

from __future__ import annotations

import math

import numpy as np

from obscura.errors import ObscuraError


def noisy_templates(templates: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The stored templates: N x D templates with independent Laplace(0, scale) noise on every coordinate.

    Scoring them by cosine (their direction) is post-processing, which cannot weaken the mechanism.
    Rows of NaN (no face found) stay NaN.
    """
    if scale < 0 or not math.isfinite(scale):
        raise ObscuraError(f"Laplace scale is {scale}; expected a finite value >= 0")
    return templates + (rng.laplace(0.0, scale, templates.shape) if scale > 0 else 0.0)


def dp_epsilon(dim: int, scale: float) -> float:
    """The epsilon of Laplace noise of this scale on unit templates of this dimension (L1 sensitivity 2 sqrt(dim))."""
    return math.inf if scale == 0 else 2.0 * math.sqrt(dim) / scale
