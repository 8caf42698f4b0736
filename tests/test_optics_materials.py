"""Sellmeier indices against catalogue values (Fraunhofer d, F, C lines)."""

from __future__ import annotations

import pytest

from obscura.errors import ObscuraError
from optics.materials import refractive_index

D, F, C = 587.56e-9, 486.13e-9, 656.27e-9


def _abbe(name: str) -> float:
    n_d, n_f, n_c = (float(refractive_index(name, lam)) for lam in (D, F, C))
    return (n_d - 1) / (n_f - n_c)


def test_fused_silica() -> None:
    assert float(refractive_index("fused_silica", D)) == pytest.approx(1.4585, abs=2e-4)
    assert _abbe("fused_silica") == pytest.approx(67.8, abs=0.3)


def test_bk7() -> None:
    assert float(refractive_index("bk7", D)) == pytest.approx(1.5168, abs=2e-4)
    assert _abbe("bk7") == pytest.approx(64.17, abs=0.2)


def test_printable_polymer_is_normal_dispersive() -> None:
    n = [float(refractive_index("ip_dip", lam)) for lam in (450e-9, 550e-9, 650e-9)]
    assert 1.5 < n[2] < n[1] < n[0] < 1.6


def test_air() -> None:
    assert float(refractive_index("air", D)) == pytest.approx(1.000277, abs=2e-6)


def test_unknown_material() -> None:
    with pytest.raises(ObscuraError, match="unobtainium"):
        refractive_index("unobtainium", D)
