"""Turn one TOML table into one settings dataclass, naming the key on every error.

Settings are plain dataclasses (the learning layer owns its own). This module is
the single place that checks a TOML value against a field's annotation, so every
error reads the same way: ``config.toml: [train] lr: expected a number, got 'fast'``.
Only the annotation shapes the settings actually use are supported; anything
else is a programming error and raises ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

T = TypeVar("T")


def build_section(cls: type[T], table: Any, *, section: str, source: str) -> T:
    """Build dataclass ``cls`` from ``table`` (a TOML table), validating every key.

    Unknown keys are refused (a typo must not silently fall back to a default),
    missing keys without a default are refused, and each value is checked
    against the field's annotation.
    """
    where = f"{source}: [{section}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {_describe(table)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {known})")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in table:
            no_default = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise ConfigError(f"{where} {name}: missing (required)")
            continue
        values[name] = coerce_value(table[name], hints[name], where=f"{where} {name}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def coerce_value(value: Any, annotation: Any, *, where: str) -> Any:
    """Check ``value`` against ``annotation`` and convert where TOML differs (list -> tuple)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, where=where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value")
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"{where}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        (item_type, *_rest) = get_args(annotation) or (Any,)
        items = [coerce_value(v, item_type, where=f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported settings annotation {annotation!r} at {where}")


def _describe(value: Any) -> str:
    kind = type(value).__name__
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


__all__ = ["build_section", "coerce_value"]
