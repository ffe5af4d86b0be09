"""JSON text pieces for the sender's wire-building fast path.

Both helpers produce exactly what the package's encoder (``json`` with compact separators
and ``ensure_ascii``) would write for the same value, so text assembled from them is the
same JSON as ``dumps`` of the whole message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

__all__ = ["dumps", "js", "string"]


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


#: ``str`` -> its JSON string literal, quotes included (the C encoder's, as ``dumps`` uses).
string = _encoder.c_encode_basestring_ascii or _encoder.py_encode_basestring_ascii  # type: ignore[attr-defined]

_encoder_object = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_c_make_encoder = _encoder.c_make_encoder  # type: ignore[attr-defined]

dumps: Callable[[Any], str]

if _c_make_encoder is not None:
    # JSONEncoder.encode() builds a new C encoder (and a float formatter closure) on every
    # call, which costs more than encoding a small message. This is the same C encoder with
    # the same options, made once. No circular-reference markers (a shared dict would not be
    # thread-safe): a cycle ends in RecursionError instead of ValueError, an error either way.
    _iterencode = _c_make_encoder(None, _json_default, string, None, ":", ",", False, False, True)

    def _c_dumps(value: Any) -> str:
        """``json.dumps(value, separators=(",", ":"), default=...)``: compact, ASCII-only."""
        return "".join(_iterencode(value, 0))

    dumps = _c_dumps
else:  # pragma: no cover - CPython always has the C encoder
    dumps = _encoder_object.encode


def js(value: Any) -> str:
    """``dumps(value)``, with a shortcut for the usual case of a plain string."""
    if type(value) is str:
        return string(value)  # type: ignore[no-any-return]
    return dumps(value)
