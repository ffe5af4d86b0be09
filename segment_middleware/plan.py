"""Tracking plans, Segment Protocols style: which events may be sent, with which properties.

A plan is a JSON or YAML file::

    {"allow_unplanned_events": true,
     "events": {"Order Completed": {"type": "object", "required": ["order_id"],
                                    "properties": {"order_id": {"type": "string"}}}},
     "identify": {"type": "object", "properties": {"email": {"type": "string"}}},
     "group": {...}}

Each schema is JSON Schema draft 7 (as Protocols uses), for a track call's ``properties``
and an identify or group call's ``traits``. The file is read and every schema compiled
once, at start-up (``jsonschema``, the ``[plans]`` extra); a file that does not parse or
a schema that is not valid stops start-up with one message naming the file and the rule.

A violation is described by where and which rule (``properties.total: type number``),
never by the value that broke it: the description goes to logs and errors.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Plan", "PlanError", "load_plan", "spec_plan"]

_SCHEMA_KEYS = ("identify", "group")


class PlanError(ValueError):
    """The plan file cannot be used; the message names the file and the rule."""


class Plan:
    """A loaded, compiled tracking plan."""

    def __init__(self, path: str, document: Mapping[str, Any]) -> None:
        try:
            from jsonschema import Draft7Validator
            from jsonschema.exceptions import SchemaError
        except ImportError:  # pragma: no cover - the extra is part of the test environment
            raise PlanError(
                f"{path}: tracking plans need jsonschema: pip install 'segment-middleware[plans]'"
            ) from None
        self.path = path
        self.warned = WarnedOnce()  # per plan: each runtime logs its own violations once
        allow = document.get("allow_unplanned_events", True)
        if not isinstance(allow, bool):
            raise PlanError(f"{path}: allow_unplanned_events must be true or false")
        self.allow_unplanned_events = allow
        events = document.get("events", {})
        if not isinstance(events, Mapping):
            raise PlanError(f"{path}: events must map event names to JSON Schemas")
        unknown = set(document) - {"allow_unplanned_events", "events", *_SCHEMA_KEYS}
        if unknown:
            raise PlanError(
                f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: events, identify, group, ...)"
            )
        self._events: dict[str, Any] = {}
        self._calls: dict[str, Any] = {}
        for where, schema in [*((f"events[{e!r}]", s) for e, s in events.items()), *_calls(document)]:
            try:
                Draft7Validator.check_schema(schema)
            except SchemaError as exc:
                rule = ".".join(str(p) for p in exc.path) or "(schema)"
                raise PlanError(f"{path}: {where}: not valid JSON Schema at {rule}: {exc.message}") from None
        for event, schema in events.items():
            self._events[event] = Draft7Validator(schema)
        for call, schema in _calls(document):
            self._calls[call] = Draft7Validator(schema)

    @property
    def events(self) -> list[str]:
        return list(self._events)

    def violations(self, message: Mapping[str, Any]) -> list[str]:
        """The rules ``message`` breaks (empty: it follows the plan), each as
        ``<field path>: <rule>``, without the values."""
        kind = message.get("type")
        if kind == "track":
            validator = self._events.get(message.get("event", ""))
            if validator is None:
                return [] if self.allow_unplanned_events else ["unplanned event"]
            return _rules(validator, message.get("properties") or {}, "properties")
        validator = self._calls.get(str(kind))
        if validator is None:
            return []
        return _rules(validator, message.get("traits") or {}, "traits")


def _calls(document: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(key, document[key]) for key in _SCHEMA_KEYS if key in document]


def _rules(validator: Any, instance: Any, root: str) -> list[str]:
    found = []
    for error in validator.iter_errors(instance):
        path = ".".join([root, *(str(p) for p in error.absolute_path)])
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            found.append(f"{path}.{missing}: required" if missing else f"{path}: required")
        else:
            found.append(f"{path}: {error.validator} {json.dumps(error.validator_value)}")
    return sorted(set(found))


#: Plans compiled in this process, by file and version of its contents: validating the
#: settings compiles the plan, and every later use of the same unchanged file (the runtime,
#: Django's system checks, a second app) gets that same Plan instead of reading it again.
_COMPILED: dict[tuple[str, int, int], Plan] = {}
_COMPILED_MAX = 16


def load_plan(path: str) -> Plan:
    """The compiled plan at ``path`` (JSON, or YAML by its suffix): read and compiled once
    per version of the file."""
    file = Path(path)
    try:
        stat = file.stat()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise PlanError(f"{path}: cannot be read ({reason})") from None
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    plan = _COMPILED.get(key)
    if plan is None:
        plan = _read_plan(file, path)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = plan
    return plan


def _read_plan(file: Path, path: str) -> Plan:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except ImportError:
        raise PlanError(f"{path}: YAML plans need PyYAML: pip install 'segment-middleware[plans]'") from None
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise PlanError(f"{path}: does not parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, Mapping):
        raise PlanError(f"{path}: a plan is an object with an 'events' key")
    return Plan(path, document)


class WarnedOnce:
    """Log a violation once per event name and rule (bounded: forgets after 4096)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def first(self, event: str, rule: str) -> bool:
        with self._lock:
            if (event, rule) in self._seen:
                return False
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen.add((event, rule))
            return True


_JSON_TYPES = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "array": {"type": "array"},
    "object": {"type": "object"},
    "date": {"type": "string"},
}


def spec_plan() -> dict[str, Any]:
    """A ready plan for the E-commerce Spec v2 and B2B SaaS Spec events (what
    ``request.segment.ecommerce`` / ``.b2b`` send), to extend with your own events:
    ``segment-middleware plan spec > plan.json``. Custom properties stay allowed."""
    from .spec_events import B2B, ECOMMERCE, PRODUCT

    product = {"type": "object", "properties": {p.name: _JSON_TYPES[p.type] for p in PRODUCT}}
    events: dict[str, Any] = {}
    for event in (*ECOMMERCE, *B2B):
        properties = {
            p.name: {"type": "array", "items": product} if p.type == "products" else _JSON_TYPES[p.type]
            for p in event.properties
        }
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if event.identifying:
            schema["required"] = list(event.identifying)
        events[event.event] = schema
    return {"allow_unplanned_events": True, "events": events}
