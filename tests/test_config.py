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
