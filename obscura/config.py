"""One configuration system for every entry point.

A configuration is a (nested) dataclass. `load` starts from the defaults of the whole tree
(nested sections and their `default_factory` included), deep-merges a YAML or JSON file onto
them, then dotted command-line keys (`optic.zernike_terms=300`), and checks the result
strictly: an unknown key, a value of the wrong type or one outside the range its field declares
(`bounded`) is a one-line error naming the key. The resolved configuration is written back next
to the outputs of the run that used it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from obscura import atomic
from obscura.errors import ObscuraError

T = TypeVar("T")
RESOLVED_NAME = "config.yaml"
_RANGE = "obscura.range"


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: bounds (None: open) plus single values allowed besides them."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[float, ...] = ()

    def admits(self, value: float) -> bool:
        """True when `value` lies in the range or is one of the extra values."""
        if value in self.also:
            return True
        if isinstance(value, float) and math.isnan(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """'>= 1', '> 0', 'in [0, 1)', '0 or >= 16': what the error message says was expected."""
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            text = f"a value in {low}, {high}"
        elif low:
            text = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}"
        else:
            text = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}"
        return " or ".join([*(f"{v:g}" for v in self.also), text])


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    also: tuple[float, ...] = (),
) -> Any:
    """A dataclass field whose numeric range is declared once here and checked by the loader."""
    return dataclasses.field(default=default, metadata={_RANGE: Range(ge, gt, le, lt, also)})


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults of `cls`, deep-merged with an optional YAML/JSON file, then with dotted-key overrides; checked."""
    data = defaults(cls)
    if path is not None:
        merge(cls, data, read_file(path))
    for dotted, value in (overrides or {}).items():
        merge(cls, data, nested(dotted, value))
    return from_dict(cls, data, where=f"{path}: " if path is not None else "")


def defaults(cls: type) -> dict[str, Any]:
    """The plain-data defaults of every field that has one (nested sections as their factories make them)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def merge(cls: type, base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Write `update` into `base`: a section (a dataclass field) merges key by key, any other value replaces.

    A mapping-valued setting (e.g. split fractions, one whole partition) is a value, so it replaces.
    Unknown keys are copied as they are; `from_dict` then refuses them by name.
    """
    if not isinstance(update, Mapping):
        raise ObscuraError(f"expected a mapping of keys to values, got {type(update).__name__}")
    hints = typing.get_type_hints(cls)
    for key, value in update.items():
        section = _section_type(hints.get(key))
        if section is not None and isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(section, base[key], value)
        else:
            base[key] = value


def _section_type(tp: Any) -> type | None:
    """The dataclass a field holds (directly or as `X | None`), or None for a plain value."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def nested(dotted: str, value: Any) -> dict[str, Any]:
    """`a.b.c`, v -> {'a': {'b': {'c': v}}}."""
    *parents, leaf = dotted.split(".")
    if not leaf or not all(parents):
        raise ObscuraError(f"override '{dotted}': expected a dotted key such as section.key")
    out: dict[str, Any] = {leaf: value}
    for part in reversed(parents):
        out = {part: out}
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping, with a one-line error naming the file when it is not one."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ObscuraError(f"cannot read config file {file}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ObscuraError(f"config file {file} is not valid YAML/JSON: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ObscuraError(f"config file {file}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: Any, where: str = "", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, refusing unknown keys, values of the wrong type and values out of range."""
    if not isinstance(data, Mapping):
        raise ObscuraError(f"{where}config key '{prefix or '<root>'}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ObscuraError(
                f"{where}unknown config key '{_join(prefix, str(key))}' (expected one of: {', '.join(sorted(fields))})"
            )
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, _join(prefix, name), where) for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ObscuraError(f"{where}config key '{_join(prefix, missing[0])}' is required")
    built = cls(**kwargs)
    _check_ranges(built, where, prefix)
    return built


def check(cfg: Any, where: str = "", prefix: str = "") -> None:
    """Check every declared range of a configuration built in code (the loader checks its own), nested sections too."""
    _check_ranges(cfg, where, prefix)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check(value, where, _join(prefix, f.name))


def _check_ranges(cfg: Any, where: str, prefix: str) -> None:
    """One-line error for the first field of this level whose value lies outside its declared range."""
    for f in dataclasses.fields(cfg):
        allowed, value = f.metadata.get(_RANGE), getattr(cfg, f.name)
        if allowed is not None and value is not None and not allowed.admits(value):
            raise ObscuraError(
                f"{where}config key '{_join(prefix, f.name)}' is {value!r}; expected {allowed.describe()}"
            )


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-data form of a configuration (paths become strings, tuples lists)."""
    return _plain(dataclasses.asdict(config))


def write_resolved(config: Any, out_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved configuration next to a run's outputs (atomically) and return its path."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    return atomic.write_text(Path(out_dir) / name, text)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse `key.sub=value` strings from the command line; values are read as YAML scalars."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ObscuraError(f"override '{item}' must look like key.sub=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    return overrides


def _coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    """Check `value` against type annotation `tp`, converting where the conversion is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key, where)
            except ObscuraError as err:
                errors.append(err)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise ObscuraError(f"{where}config key '{key}' is {value!r}; expected one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ObscuraError(f"{where}config key '{key}' must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(item_type, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ObscuraError(f"{where}config key '{key}' must be a mapping, got {value!r}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(value_type, v, f"{key}.{k}", where) for k, v in value.items()}
    return _coerce_scalar(tp, value, key, where)


def _coerce_scalar(tp: Any, value: Any, key: str, where: str) -> Any:
    """Scalars: bool must be a bool, int an int, float any real number, str and Path a string."""
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `550e-9` (no dot) as a string; accept any text that is a plain number.
        value = _float_or_text(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, (str, Path)),
    }
    if tp not in ok:
        raise TypeError(f"config type {tp!r} of key '{key}' is not supported")
    if not ok[tp]:
        raise ObscuraError(f"{where}config key '{key}' is {value!r}; expected {tp.__name__}")
    return tp(value)


def _float_or_text(text: str) -> float | str:
    """The number `text` spells, or `text` itself when it is not one."""
    try:
        return float(text)
    except ValueError:
        return text


def _join(prefix: str, key: str) -> str:
    """Dotted key path."""
    return f"{prefix}.{key}" if prefix else key


def _plain(value: Any) -> Any:
    """Paths to strings, tuples to lists, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
