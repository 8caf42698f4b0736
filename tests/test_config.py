"""The one configuration system: strict loading, overrides, resolved output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from obscura import config
from obscura.errors import ObscuraError


@dataclass
class Optic:
    zernike_terms: int = 300
    material: Literal["fused_silica", "bk7"] = "fused_silica"
    wavelengths_m: list[float] = field(default_factory=lambda: [640e-9, 550e-9, 440e-9])


@dataclass
class Run:
    out: Path
    optic: Optic = field(default_factory=Optic)
    lr: float = 1e-3
    resume: bool = False
    seed: Optional[int] = None


def test_file_and_overrides_resolve_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("out: runs/a\noptic:\n  zernike_terms: 350\nlr: 2\n")
    cfg = config.load(Run, path, config.parse_overrides(["optic.material=bk7", "seed=7"]))
    assert cfg.out == Path("runs/a")
    assert cfg.optic == Optic(zernike_terms=350, material="bk7")
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float)
    assert cfg.seed == 7


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("out: x\noptic:\n  zernike_term: 3\n")
    with pytest.raises(ObscuraError, match=r"unknown config key 'optic.zernike_term'"):
        config.load(Run, path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optic.zernike_terms=many", r"'optic.zernike_terms' is 'many'; expected int"),
        ("resume=1", r"'resume' is 1; expected bool"),
        ("optic.material=glass", r"'optic.material' is 'glass'; expected one of"),
        ("optic.wavelengths_m=0.5", r"'optic.wavelengths_m' must be a list"),
    ],
)
def test_wrong_types_are_refused(override: str, message: str) -> None:
    with pytest.raises(ObscuraError, match=message):
        config.load(Run, None, {"out": "x", **config.parse_overrides([override])})


def test_missing_required_key() -> None:
    with pytest.raises(ObscuraError, match=r"config key 'out' is required"):
        config.load(Run, None, {})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ObscuraError, match=r"cannot read config file .*nope.yaml"):
        config.load(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: [unclosed\n")
    with pytest.raises(ObscuraError, match=r"bad.yaml is not valid YAML"):
        config.load(Run, bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ObscuraError, match=r"expected a mapping"):
        config.load(Run, listing)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = config.load(Run, None, {"out": "runs/b", "optic": {"zernike_terms": 12}})
    written = config.write_resolved(cfg, tmp_path)
    assert written == tmp_path / config.RESOLVED_NAME
    assert yaml.safe_load(written.read_text())["optic"]["zernike_terms"] == 12
    assert config.load(Run, written) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp.yaml")]


def test_malformed_override() -> None:
    with pytest.raises(ObscuraError, match=r"override 'lr' must look like key.sub=value"):
        config.parse_overrides(["lr"])


def test_exponent_without_dot_is_a_float() -> None:
    cfg = config.load(Run, None, {"out": "x", **config.parse_overrides(["lr=1e-6"])})
    assert cfg.lr == 1e-6
    with pytest.raises(ObscuraError, match=r"'lr' is 'fast'; expected float"):
        config.load(Run, None, {"out": "x", "lr": "fast"})


@dataclass
class Loop:
    steps: int = config.bounded(10, ge=1)
    share: float = config.bounded(0.25, ge=0, lt=1)
    size: int = config.bounded(0, ge=16, also=(0,))


def _wide_optic() -> Optic:
    return Optic(zernike_terms=36, material="bk7")


@dataclass
class Nested:
    optic: Optic = field(default_factory=_wide_optic)
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "test": 0.4})
    loop: Loop = field(default_factory=Loop)


def test_a_partial_section_merges_onto_its_default_factory(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("optic:\n  wavelengths_m: [5.5e-7]\n")
    cfg = config.load(Nested, path)
    assert cfg.optic == Optic(zernike_terms=36, material="bk7", wavelengths_m=[5.5e-7])  # the factory's values stay
    cfg = config.load(Nested, None, {"optic.zernike_terms": 12, "optic": {"material": "fused_silica"}})
    assert (cfg.optic.zernike_terms, cfg.optic.material) == (12, "fused_silica")


def test_a_mapping_valued_setting_is_replaced_whole() -> None:
    assert config.load(Nested, None, {"fractions": {"train": 1.0}}).fractions == {"train": 1.0}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("loop.steps", 0, r"'loop.steps' is 0; expected >= 1"),
        ("loop.share", 1.0, r"'loop.share' is 1.0; expected a value in \[0, 1\)"),
        ("loop.size", 8, r"'loop.size' is 8; expected 0 or >= 16"),
        ("loop.share", float("nan"), r"'loop.share' is nan"),
    ],
)
def test_declared_ranges_are_checked_by_the_loader(key: str, value: float, message: str) -> None:
    with pytest.raises(ObscuraError, match=message):
        config.load(Nested, None, {key: value})


def test_declared_ranges_are_checked_on_a_config_built_in_code() -> None:
    assert config.load(Nested, None, {"loop.size": 0, "loop.share": 0.0}).loop == Loop(size=0, share=0.0)
    config.check(Nested())
    with pytest.raises(ObscuraError, match=r"config key 'loop.size' is 3; expected 0 or >= 16"):
        config.check(Nested(loop=Loop(size=3)))
