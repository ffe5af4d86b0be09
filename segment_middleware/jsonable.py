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
