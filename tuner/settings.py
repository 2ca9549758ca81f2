"""Controller settings as users write them (``--lr init_lr=1e-3,total_steps=1e4`` or JSON),
checked against a config dataclass's field types before the config is built, so a wrong
type is named as such and not met later as an arithmetic error."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from tuner.errors import ConfigError


def typed_settings(cls: type, settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``settings`` for the dataclass ``cls``, each value of the type its field declares
    (``int`` fields take a whole float such as ``1e4`` as that int; ``float`` fields take
    ints). Names ``cls`` does not have and types this does not know are passed on as they
    are, for ``cls`` to judge.

    Raises:
        ConfigError: a value of the wrong type, naming ``where``, the setting and the value.
    """
    hints = typing.get_type_hints(cls)
    out = dict(settings)
    for name, value in settings.items():
        if name not in hints:
            continue
        ok, converted = _convert(hints[name], value)
        if not ok:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}{name} must be {_describe(hints[name])}, got {value!r}")
        out[name] = converted
    return out


def _convert(hint: Any, value: Any) -> tuple[bool, Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _convert(arg, value)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if isinstance(value, bool):
        return hint is bool, value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if hint is float:
        return isinstance(value, int | float), float(value) if isinstance(value, int) else value
    if hint is str or hint is bool:
        return isinstance(value, hint), value
    return True, value  # containers and the like: the config checks them


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        unset = " (or left unset)" if len(args) < len(typing.get_args(hint)) else ""
        return " or ".join(_describe(a) for a in args) + unset
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
