"""Typed configs: dataclasses that load from YAML and take `--key value` command-line overrides.

Every hyper-parameter of a command lives in one dataclass with the paper's default. A YAML file
(`--config FILE.yaml`) overrides defaults, explicit command-line flags override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from unisrec.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    pass


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    tp = hints[f.name]
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        tp = next(a for a in args if a is not type(None))
    return tp


def _coerce(cls: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    if value is None:
        return None
    tp = _field_type(cls, f)
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1]
            if isinstance(value, str):  # "10,50"; a repeatable flag's value is one item (a path may hold commas)
                value = [value] if f.metadata.get("repeat") else [v for v in value.split(",") if v.strip()]
            return [inner(v) for v in value]
        if typing.get_origin(tp) is typing.Literal:
            if value not in typing.get_args(tp):
                raise ValueError(value)
            return value
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError):
        kind = " or ".join(map(str, typing.get_args(tp))) if typing.get_origin(tp) is typing.Literal else getattr(tp, "__name__", tp)
        raise ConfigError(f"{where}: {f.name} must be {kind}, got {value!r}") from None
    return value


def option_fields(cls: type) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every user-settable option of dataclass ``cls`` by name -> (the dataclass that owns it, field).

    A nested dataclass field (a model config's ``encoder``) contributes its own fields under their
    own names; fields marked ``metadata={"derived": True}`` come from the data, not the user."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(option_fields(hints[f.name]))
        else:
            out[f.name] = (cls, f)
    return out


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from flat option values (nested dataclasses take the values of their own fields)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build_config(hints[f.name], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    try:
        return cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, UserError):
            raise
        raise ConfigError(str(exc)) from None


def load_configs(classes: tuple[type, ...], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """Defaults <- YAML file ``path`` <- ``overrides`` (None = not given), for several config classes
    at once: each flat key goes to the class that owns it (e.g. ``lr`` to TrainConfig,
    ``hidden_size`` to a model config's encoder)."""
    owners: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in classes:  # a name several classes share is typed by the first; each class takes the value
        for name, owner in option_fields(cls).items():
            owners.setdefault(name, owner)
    values: dict[str, Any] = {}
    if path is not None:
        for k, v in _read_yaml(Path(path)).items():
            if k not in owners:
                raise ConfigError(f"config file {path}: unknown option {k}; known: {', '.join(sorted(owners))}")
            values[k] = _coerce(owners[k][0], owners[k][1], v, str(path))
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in owners:
            raise ConfigError(f"unknown option {k}")
        values[k] = _coerce(owners[k][0], owners[k][1], v, "command line")
    return tuple(build_config(cls, values) for cls in classes)


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``overrides`` (None values are ignored)."""
    return load_configs((cls,), path, overrides)[0]


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


def add_config_arguments(parser: argparse.ArgumentParser, *classes: type, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` flag per option of the dataclasses (default None = "not given"), plus
    `--config`. ``Literal`` fields list their choices; a bool flag alone means true; a list field
    with ``metadata={"repeat": True}`` is a repeatable flag (``--source A --source B``)."""
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options; flags override it")
    seen = set(skip)
    for cls in classes:
        for name, (owner, f) in option_fields(cls).items():
            if name in seen:  # skipped, or already a flag of an earlier class (one flag sets both)
                continue
            seen.add(name)
            tp = _field_type(owner, f)
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
            kwargs: dict[str, Any] = {"dest": name, "default": None, "help": f"{f.metadata.get('help', '')} (default: {default})".strip()}
            if typing.get_origin(tp) is typing.Literal:
                kwargs["choices"] = typing.get_args(tp)
            elif f.metadata.get("repeat"):  # a list given as --name A --name B (paths may hold commas)
                kwargs.update(action="append", metavar=str(f.metadata.get("metavar", name.upper())))
            elif tp is bool:
                kwargs.update(nargs="?", const="true", metavar="BOOL")
            else:
                kwargs["metavar"] = name.upper()
            parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def configs_from_args(classes: tuple[type, ...], args: argparse.Namespace) -> tuple[Any, ...]:
    names = {n for cls in classes for n in option_fields(cls)}
    return load_configs(classes, getattr(args, "config", None), {n: getattr(args, n, None) for n in names})


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    return configs_from_args((cls,), args)[0]
