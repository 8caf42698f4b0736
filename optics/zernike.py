"""Zernike polynomials in Noll's ordering and normalisation, sampled on a pupil grid.

Noll (1976), J. Opt. Soc. Am. 66, 207: index j = 1, 2, ... ; even j carry cos(m theta), odd j
sin(m theta); each polynomial has unit RMS over the unit disc, so a coefficient is the RMS of
its term.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import eval_jacobi

from optics import checks


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal frequency m of Noll index j (m < 0: sine term)."""
    checks.positive_int("Zernike Noll index", j)
    n = 0
    remaining = j - 1
    while remaining > n:
        n += 1
        remaining -= n
    m_abs = (n % 2) + 2 * ((remaining + ((n + 1) % 2)) // 2)
    return n, m_abs if j % 2 == 0 else -m_abs if m_abs else 0


def radial(n: int, m_abs: int, rho: np.ndarray) -> np.ndarray:
    """Radial polynomial R_n^m(rho) through the Jacobi form, stable at high order."""
    k = (n - m_abs) // 2
    # R_n^m(rho) = (-1)^k rho^m P_k^(m,0)(1 - 2 rho^2)
    return (-1) ** k * rho**m_abs * eval_jacobi(k, m_abs, 0, 1.0 - 2.0 * rho**2)


def zernike(j: int, rho: np.ndarray, theta: np.ndarray, rho_max: float = 1.0) -> np.ndarray:
    """Noll-normalised Zernike polynomial Z_j at polar coordinates (zero where rho > rho_max)."""
    n, m = noll_to_nm(j)
    # Rim samples just past rho = 1 continue the surface at its edge value (radially constant).
    r = radial(n, abs(m), np.minimum(rho, 1.0))
    if m == 0:
        z = math.sqrt(n + 1) * r
    elif m > 0:
        z = math.sqrt(2 * (n + 1)) * r * np.cos(m * theta)
    else:
        z = math.sqrt(2 * (n + 1)) * r * np.sin(-m * theta)
    return np.where(rho <= rho_max, z, 0.0)


def zernike_basis(num_terms: int, rho: np.ndarray, theta: np.ndarray, rho_max: float = 1.0) -> np.ndarray:
    """Stack Z_1 .. Z_num_terms on the given polar grid: shape (num_terms, *rho.shape), float64."""
    checks.positive_int("number of Zernike terms", num_terms)
    return np.stack([zernike(j, rho, theta, rho_max) for j in range(1, num_terms + 1)])
