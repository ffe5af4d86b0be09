"""The Segment Spec as methods: ``request.segment.ecommerce`` and ``request.segment.b2b``.

One method per event of Segment's E-commerce Spec v2 and B2B SaaS Spec, named after the
event in snake_case, its spec properties as keyword arguments (typed, so IDEs and mypy
see them) and any further keyword as a custom property. Everything about an event comes
from its row in :mod:`.spec_events`: the methods are generated from that table into
:mod:`.spec_methods` (``scripts/spec_methods.py``; a test regenerates them and compares);
this module holds what they share, the checks at the call, which read the table too.

At the call: the event's identifying property (``order_id``, ``product_id``...) must be
given and not empty; every spec property given must have the spec's type (numbers for
prices and quantities, a list of product objects for ``products``); ``Decimal``,
``datetime``, ``date``, ``UUID``, ``Enum`` and sets become JSON. A mistake raises
``TypeError``/``ValueError`` naming the method and the field, in the view that made it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from .spec_events import B2B as B2B_EVENTS
from .spec_events import ECOMMERCE as ECOMMERCE_EVENTS
from .spec_events import PRODUCT, SpecEvent

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .keywords import CallOptions


class Tracks(Protocol):
    """What the spec methods need of a tracker (``tracker.Tracker``): its ``track``."""

    def track(
        self, event: str, properties: Mapping[str, Any] | None = ..., **options: Unpack[CallOptions]
    ) -> None: ...


__all__ = ["SpecCalls", "accepts_int"]

_BY_METHOD: dict[str, SpecEvent] = {e.method: e for e in (*ECOMMERCE_EVENTS, *B2B_EVENTS)}
_PRODUCT_FIELDS = {p.name: p for p in PRODUCT}
_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "True or False",
    "array": "a list",
    "object": "a dict",
    "products": "a list of product dicts",
    "date": "a datetime, a date or an ISO 8601 string",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def accepts_int(name: str) -> bool:
    """Is this string property an identifier? A database id is often an int: the call
    takes one and sends it as a string. Other strings (a currency, a name) take only text,
    and the generated methods are annotated to say which is which."""
    return name.endswith("_id") or name == "sku"


#: The spec's types, as checks of a given value (an int id is a string: see ``_checked``).
_TYPE_OK: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, (str, uuid.UUID, enum.Enum)),
    "number": _is_number,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, (list, tuple, set, frozenset)),
    "object": lambda v: isinstance(v, Mapping),
    "products": lambda v: isinstance(v, (list, tuple)),
    "date": lambda v: isinstance(v, (_dt.date, str)),
}
#: Each method's property name -> spec type.
_TYPES: dict[str, dict[str, str]] = {m: {p.name: p.type for p in e.properties} for m, e in _BY_METHOD.items()}


def _checked(call: str, name: str, kind: str, value: Any) -> Any:
    """``value`` if it has the spec type ``kind`` (an int identifier becomes a string); raises
    naming the call and the field."""
    if kind == "string" and type(value) is int and accepts_int(name.rsplit(".", 1)[-1]):
        return str(value)
    if not _TYPE_OK[kind](value):
        raise TypeError(f"{call}: {name} must be {_TYPE_NAMES[kind]}, got {type(value).__name__}")
    if kind == "products":
        return [_product(call, f"{name}[{i}]", item) for i, item in enumerate(value)]
    return value


def _product(call: str, name: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"{call}: {name} must be a product dict, got {type(item).__name__}")
    product = dict(item)
    for key, value in item.items():
        field = _PRODUCT_FIELDS.get(key)
        if field is not None and value is not None:
            product[key] = _checked(call, f"{name}.{key}", field.type, value)
    return product


class SpecCalls:
    """What the generated methods share: the checks, then one ``track`` on the tracker."""

    __slots__ = ("_tracker",)

    def __init__(self, tracker: Tracks) -> None:
        self._tracker = tracker

    def _send(
        self,
        method: str,
        given: Mapping[str, Any],
        custom: Mapping[str, Any],
        group_id: Any = None,
    ) -> None:
        spec = _BY_METHOD[method]
        types = _TYPES[method]
        call = f"{method}()"
        properties: dict[str, Any] = {}
        for name, value in given.items():
            if value is not None:
                properties[name] = _checked(call, name, types[name], value)
        for name in spec.identifying:
            value = properties.get(name)
            if value is None or value == "" or value == []:
                raise ValueError(f"{call}: {name} is required (the event's identifying property)")
        for name, value in custom.items():
            if value is not None:
                properties[name] = value
        options: dict[str, Any] = {}
        if group_id is not None:
            options["context"] = {"groupId": _checked(call, "group_id", "string", group_id)}
        self._tracker.track(spec.event, properties, **options)
