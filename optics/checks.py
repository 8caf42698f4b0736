"""Validation of physical inputs: one-line ObscuraError naming the value and what was expected."""

from __future__ import annotations

import math

from obscura.errors import ObscuraError

MIN_WAVELENGTH_M = 200e-9
MAX_WAVELENGTH_M = 2e-6


def positive(name: str, value: float) -> float:
    """A finite, strictly positive real number (distances, pitches, sizes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ObscuraError(f"{name} is {value!r}; expected a finite number > 0")
    return float(value)


def positive_or_inf(name: str, value: float) -> float:
    """A strictly positive distance where +inf means 'at infinity' (an object distance)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return positive(name, value)


def wavelength(name: str, value: float) -> float:
    """A wavelength in metres inside the 200 nm - 2 um range these models are valid for."""
    value = positive(name, value)
    if not MIN_WAVELENGTH_M <= value <= MAX_WAVELENGTH_M:
        raise ObscuraError(f"{name} is {value!r} m; expected a wavelength between 2e-07 and 2e-06 m (200 nm - 2 um)")
    return value


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """An integer >= minimum (grid sizes, term counts, levels)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ObscuraError(f"{name} is {value!r}; expected an integer >= {minimum}")
    return value
