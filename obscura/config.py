"""One configuration system for every entry point.

A configuration is a (nested) dataclass. It is read from a YAML or JSON file, overridden by
dotted command-line keys (`optic.zernike_terms=300`), checked strictly (an unknown key or a
value of the wrong type is an error naming the key), and written back, resolved, next to the
outputs of the run that used it.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from obscura import atomic
from obscura.errors import ObscuraError

T = TypeVar("T")
RESOLVED_NAME = "config.yaml"


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build `cls` from an optional YAML/JSON file plus dotted-key overrides; defaults fill the rest."""
    data: dict[str, Any] = read_file(path) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    where = f"{path}: " if path is not None else ""
    return from_dict(cls, data, where=where)


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
    """Build dataclass `cls` from a mapping, refusing unknown keys and values of the wrong type."""
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
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ObscuraError(f"{where}config key '{_join(prefix, missing[0])}' is required")
    return cls(**kwargs)


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


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the intermediate mappings."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ObscuraError(f"override '{dotted}': '{part}' is not a section")
    node[leaf] = value


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
