"""The protection registry: specs with options, strict option checking, cache keys, protections as evaluate methods."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from evaluation import methods
from obscura.config import bounded
from obscura.errors import ObscuraError
from protect import registry
from protect.protection import Kind, Transform


@dataclass
class DimOptions:
    """Options of a test protection that scales the image."""

    factor: float = bounded(0.5, ge=0.0, le=1.0)


def _dim(options: DimOptions) -> Transform:
    return lambda image: (image * options.factor).astype(np.uint8)


@pytest.fixture
def dim_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.KINDS, "dim", Kind(DimOptions, _dim, "darkened"))


def test_spec_options_reach_the_transform_and_the_cache_key(dim_kind: None) -> None:
    image = np.full((4, 4, 3), 200, np.uint8)
    half, quarter = registry.get("dim"), registry.get("dim:factor=0.25")
    assert half.apply(image)[0, 0, 0] == 100 and quarter.apply(image)[0, 0, 0] == 50
    assert half.cache_key != quarter.cache_key
    assert registry.get("dim", ["factor=0.25"]).cache_key == quarter.cache_key
    assert "factor=0.25" in quarter.description


@pytest.mark.parametrize(
    "spec, expected", [("dim:factor=2", "factor"), ("dim:strength=1", "strength"), ("nope", "unknown protection")]
)
def test_bad_specs_are_one_line(dim_kind: None, spec: str, expected: str) -> None:
    with pytest.raises(ObscuraError, match=expected) as err:
        registry.get(spec)
    assert "\n" not in str(err.value)


def test_a_protection_is_an_evaluate_method(dim_kind: None) -> None:
    method = methods.get("dim:factor=0.25")
    assert method.forward is None and "dim" in methods.names()
    assert method.apply(np.full((2, 2, 3), 40, np.uint8))[0, 0, 0] == 10
