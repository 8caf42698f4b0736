"""Zernike polynomials: Noll ordering, closed forms and orthonormality over the unit disc."""

from __future__ import annotations

import math

import numpy as np
import pytest

from obscura.errors import ObscuraError
from optics.zernike import noll_to_nm, zernike, zernike_basis

# Noll (1976), table 1: j -> (n, m), negative m = sine term.
NOLL = {
    1: (0, 0),
    2: (1, 1),
    3: (1, -1),
    4: (2, 0),
    5: (2, -2),
    6: (2, 2),
    7: (3, -1),
    8: (3, 1),
    9: (3, -3),
    10: (3, 3),
    11: (4, 0),
    12: (4, 2),
    13: (4, -2),
    14: (4, 4),
    15: (4, -4),
    22: (6, 0),
}


def _disc(n: int = 400):
    x = (np.arange(n) - (n - 1) / 2) / (n / 2)
    xx, yy = np.meshgrid(x, x)
    return np.hypot(xx, yy), np.arctan2(yy, xx)


def test_noll_table() -> None:
    assert {j: noll_to_nm(j) for j in NOLL} == NOLL


def test_closed_forms() -> None:
    rho, theta = _disc(64)
    inside = rho <= 1
    assert np.allclose(zernike(4, rho, theta)[inside], math.sqrt(3) * (2 * rho**2 - 1)[inside])
    assert np.allclose(zernike(8, rho, theta)[inside], math.sqrt(8) * ((3 * rho**3 - 2 * rho) * np.cos(theta))[inside])
    assert np.allclose(zernike(11, rho, theta)[inside], math.sqrt(5) * (6 * rho**4 - 6 * rho**2 + 1)[inside])


def test_orthonormal_up_to_350_terms() -> None:
    rho, theta = _disc(400)
    basis = zernike_basis(351, rho, theta)
    inside = rho <= 1
    samples = basis[:, inside]
    gram = samples @ samples.T / inside.sum()
    assert np.isfinite(basis).all()
    assert noll_to_nm(351)[0] == 25
    # Discretisation of the disc edge limits the accuracy of the sum, not the polynomials.
    assert np.abs(gram - np.eye(351)).max() < 0.02
    assert basis[:, ~inside].max() == 0


def test_bad_index() -> None:
    with pytest.raises(ObscuraError, match="Noll index"):
        noll_to_nm(0)
