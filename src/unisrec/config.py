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
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return [inner(v) for v in value]
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {f.name} must be {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``overrides`` (None values are ignored)."""
    values: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    if path is not None:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of option: value")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        for k, v in data.items():
            values[k] = _coerce(cls, names[k], v, str(path))
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in names:
            raise ConfigError(f"unknown option {k}")
        values[k] = _coerce(cls, names[k], v, "command line")
    return cls(**values)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` flag per dataclass field (default None = "not given"), plus `--config`."""
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options; flags override it")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        helptext = f.metadata.get("help", "")
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{helptext} (default: {default})".strip(),
        )


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    return load_config(cls, getattr(args, "config", None), overrides)
