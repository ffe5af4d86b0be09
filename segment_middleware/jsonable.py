"""Turn user values into plain JSON data at the call, so misuse fails where it happens.

The SDK finds an unserializable value only on its sender thread, where the error can no
longer reach the code that caused it. We convert (Decimal, datetime, date, UUID, Enum,
sets) or raise ``TypeError``/``ValueError`` naming the exact path of the bad value.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["jsonable"]

MAX_DEPTH = 32
_SCALARS = (str, int, type(None))


def jsonable(value: Any, where: str = "value", _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value``; raises naming ``where`` (e.g. ``properties['price']``)."""
    try:
        return _plain(value, _depth)
    except _NotPlain:
        return _named(value, where, _depth)


class _NotPlain(Exception):
    """A value :func:`_plain` does not copy as it is: :func:`_named` converts it or says why not."""


def _plain(value: Any, depth: int) -> Any:
    """The copy :func:`_named` would make of data that is already plain JSON (what a JSON
    parser gives: dicts with string keys, lists, strings, ints, bools, finite floats, None),
    without building each item's name for an error that cannot happen. Anything else
    raises :class:`_NotPlain`, and :func:`_named` starts over, with names. Exact types only:
    a subclass (an IntEnum, an OrderedDict) takes the named path."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        if math.isfinite(value):
            return value
        raise _NotPlain
    if depth >= MAX_DEPTH:
        raise _NotPlain
    if cls is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            out[key] = _plain(item, depth + 1)
        return out
    if cls is list:
        return [_plain(item, depth + 1) for item in value]
    raise _NotPlain


def _named(value: Any, where: str, _depth: int) -> Any:
    if isinstance(value, _SCALARS):  # bool is an int
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not allowed in JSON")
        return value
    if _depth >= MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels (a cycle?)")
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                if isinstance(key, (int, float, bool)) or key is None:
                    key = str(key) if not isinstance(key, bool) else ("true" if key else "false")
                else:
                    raise TypeError(f"{where}: keys must be strings, got {type(key).__name__}")
            out[key] = jsonable(item, f"{where}[{key!r}]", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]", _depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{where}: {value!r} is not allowed in JSON")
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, where, _depth + 1)
    if isinstance(value, (set, frozenset)):
        items = [jsonable(item, f"{where}[...]", _depth + 1) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serializable")
