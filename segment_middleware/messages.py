"""One message path: a call becomes its wire message once, in :func:`prepare`.

A call starts as a :class:`Queued`: the call's own members and the raw facts of its
request. :func:`prepare` builds the whole message as a dict (:func:`finish`: context,
page properties, integrations, timestamp, messageId), runs BEFORE_SEND on it, and
encodes it once (:func:`encode`). Where that happens is the settings' choice
(``Settings.builds_when_queued``): on the calling thread as the call is queued, unless
the app's own code (BEFORE_SEND, a SUPPRESSED_USERS callable) or a tracking plan's check
takes part, which the sender thread runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .context import RequestFacts, clean_facts, facts_values, page_properties, request_context
from .ids import random_id
from .spec_events import CURRENCY_EVENTS

if TYPE_CHECKING:
    from .ledger import Ledger
    from .settings import Settings

log = logging.getLogger("segment_middleware")

__all__ = [
    "KEPT_FIELDS",
    "Blocked",
    "Encoded",
    "Packed",
    "QueueItem",
    "Queued",
    "build",
    "encode",
    "finish",
    "iso_timestamp",
    "kept_fields",
    "page_message",
    "prepare",
    "take",
]

MAX_MESSAGE_BYTES = 32 * 1024  # Segment's limit for one message


@dataclasses.dataclass(slots=True)
class Queued:
    """A call as the core hands it to its pipeline: a tracker call's own members
    (``message``), or, when ``message`` is None, a request's automatic page call, whose
    message :func:`build` makes from the fields after ``facts`` (a packed one holds no dict
    of its own then: up to MAX_QUEUE_SIZE of them wait during an outage).

    Built as it is queued (``Settings.builds_when_queued``), it never waits; otherwise the
    queue holds it packed (:meth:`packed`) and the sender unpacks it (:meth:`unpack`)."""

    message: dict[str, Any] | None  # type, ids, event or name, properties...
    timestamp: float  # time.time() at the call
    facts: RequestFacts | None  # the request the call was made in; None outside one
    name: str | None = None  # the automatic page call's name (the route)
    anonymous_id: str | None = None
    user_id: str | None = None
    status: int | None = None  # the response status
    title: str | None = None  # the title a view set

    @staticmethod
    def pack(
        message: dict[str, Any] | None,
        timestamp: float,
        facts: RequestFacts | None,
        name: str | None = None,
        anonymous_id: str | None = None,
        user_id: str | None = None,
        status: int | None = None,
        title: str | None = None,
    ) -> Packed:
        """A call as it waits in the queue: a plain tuple of these fields, in this class's
        order, its facts a plain tuple of their values (``facts_values``).

        Why not the object itself: a call the sender builds (``Settings.builds_when_queued``
        false; otherwise it is built before it is queued and never packed) lives through
        hundreds of requests, so the cyclic collector would move it to its oldest
        generation, and enough of those start full collections of the whole process
        (figures in bench/README.md). Tuples of strings and numbers are ones the collector
        stops tracking once it has looked at them (the facts at its first collection, the
        call's tuple at the next), long before the oldest generation. (A tracker call's
        message dict keeps its tuple tracked, as any dict would.) A test holds pack's
        parameters, :meth:`packed` and :meth:`unpack` to the field list."""
        return (
            message,
            timestamp,
            None if facts is None else facts_values(facts),
            name,
            anonymous_id,
            user_id,
            status,
            title,
        )

    def packed(self) -> Packed:
        """This call as :meth:`pack` packs it."""
        return Queued.pack(*_queued_values(self))

    @classmethod
    def unpack(cls, packed: Packed) -> Queued:
        """The call :meth:`pack` packed."""
        message, timestamp, facts, name, anonymous_id, user_id, status, title = packed
        return cls(
            message,
            timestamp,
            None if facts is None else RequestFacts(*facts),
            name,
            anonymous_id,
            user_id,
            status,
            title,
        )


Packed = tuple[Any, ...]  # a Queued as the queue holds it (Queued.pack, Queued.unpack)

# A call's fields in their declared order, as :meth:`Queued.pack` takes them; derived from
# the field list, so it cannot fall out of step.
_queued_values: Callable[[Queued], tuple[Any, ...]] = operator.attrgetter(
    *[field.name for field in dataclasses.fields(Queued)]
)

_T = TypeVar("_T")


def take(queue: deque[_T], limit: int | None = None) -> list[_T]:
    """Up to ``limit`` (None: all) items from the left of a deque that request threads
    append to. Each pop is tried, not counted first: another taker may empty it between."""
    items: list[_T] = []
    while limit is None or len(items) < limit:
        try:
            items.append(queue.popleft())
        except IndexError:
            break
    return items


@dataclasses.dataclass(slots=True)
class Encoded:
    """A finished message's JSON, and the fields of it that the store, the erasure and the
    logs read (``message``: see :func:`kept_fields`)."""

    message: dict[str, Any]
    body: bytes


#: What is read of a message once it is encoded: the store's columns, the erasure's rule
#: (an alias's previousId included), the log lines. Nothing else of it outlives :func:`prepare`.
KEPT_FIELDS = ("messageId", "type", "event", "name", "userId", "anonymousId", "previousId", "timestamp")

#: What a pipeline's queue (and its overflow handoff) holds: a call still to be built, or one
#: built as it was queued (``Settings.builds_when_queued``).
QueueItem = Packed | Encoded


def kept_fields(msg: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``msg`` that outlive its encoding.

    Why not keep the message itself: a batch waits for its post for milliseconds, and a
    message's dicts (context, page, properties...) are ten or so objects the cyclic
    collector tracks. Kept alive across its passes, they are promoted toward the oldest
    generation, whose full collections stop a Django worker for tens of milliseconds. A
    dict of strings and numbers is not tracked, and the message's own dicts are freed as
    soon as it is encoded."""
    return {key: msg[key] for key in KEPT_FIELDS if key in msg}


def page_message(name: str, anonymous_id: str | None, user_id: str | None) -> dict[str, Any]:
    """A request's own page call, before the sender adds properties and context."""
    msg: dict[str, Any] = {"type": "page", "name": name, "anonymousId": anonymous_id}
    if user_id is not None:
        msg["userId"] = user_id
    return msg


def finish(item: Queued, settings: Settings) -> dict[str, Any] | None:
    """The complete wire message, or None when a BEFORE_SEND hook dropped it."""
    rules = settings.consent_categories  # consent per category, first: nothing is built for a refusal
    if rules is not None and item.facts is not None:
        own_call = item.message
        kind, event = ("page", None) if own_call is None else (own_call.get("type"), own_call.get("event"))
        if rules.refuses(kind, event, item.facts.consent):
            raise Blocked("consent")
    name = item.name or ""  # the automatic page call's: the route's name, else the path
    if item.facts is not None:  # visitor-chosen text: capped, no control characters
        path = item.facts.path
        item.facts = clean_facts(item.facts)
        if name == path:
            name = item.facts.path  # cleaned once, with the facts
    context = request_context(item.facts, settings)
    msg = item.message
    if msg is None:  # the request's automatic page call
        msg = page_message(name, item.anonymous_id, item.user_id)
        if item.facts is not None:
            msg["properties"] = page_properties(
                context["page"], item.facts, settings, item.status, item.title
            )
    suppressed = settings.is_suppressed
    if suppressed is not None and _suppressed(msg, suppressed):
        raise Blocked("SUPPRESSED_USERS")
    own = msg.get("context")
    if own:  # the call's own context: its dicts merged into the request's, key by key
        for key, value in own.items():
            base = context.get(key)
            context[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    msg["context"] = context
    if settings.default_currency and msg["type"] == "track" and msg.get("event") in CURRENCY_EVENTS:
        properties = msg.setdefault("properties", {})
        if properties.get("currency") is None:
            properties["currency"] = settings.default_currency
    if settings.integrations or "integrations" in msg:
        per_event = settings.event_integrations.get(msg.get("event", "")) if msg["type"] == "track" else None
        msg["integrations"] = {
            **settings.default_integrations,
            **(per_event or {}),
            **msg.get("integrations", {}),
        }
    if "timestamp" not in msg:
        msg["timestamp"] = iso_timestamp(item.timestamp)
    if "messageId" not in msg:
        msg["messageId"] = random_id()
    if item.message is not None and settings.plan is not None and settings.plan_violations != "raise":
        _follow_plan(msg, settings)
    for hook in settings.before_send:
        hooked = hook(msg)
        if hooked is None:
            return None
        msg = hooked
    if suppressed is not None and settings.before_send and _suppressed(msg, suppressed):
        raise Blocked("SUPPRESSED_USERS")  # a hook gave it a suppressed user's id
    return msg


_suppression_failed = False  # SUPPRESSED_USERS raised once already (logged once per process)


def _suppressed(msg: dict[str, Any], suppressed: Any) -> bool:
    """SUPPRESSED_USERS says the message's userId is not to be sent. Before BEFORE_SEND (no
    user code sees a suppressed user's message) and after it. A callable that raises
    blocks the message: for a privacy control, failing closed is the safe way."""
    global _suppression_failed
    user_id = msg.get("userId")
    if user_id is None:
        return False
    try:
        return bool(suppressed(str(user_id)))
    except Exception as exc:
        if not _suppression_failed:
            _suppression_failed = True
            log.error(
                "segment: SUPPRESSED_USERS raised %s; messages with a userId are blocked while it does",
                type(exc).__name__,
            )
        return True


class Blocked(Exception):
    """Not to be sent, and counted ``blocked``: PLAN_VIOLATIONS = "drop" and the message
    breaks the tracking plan, or its userId is one of SUPPRESSED_USERS, or its consent
    category (EVENT_CATEGORIES, PAGE_CATEGORY) is one the visitor refused."""


def _follow_plan(msg: dict[str, Any], settings: Settings) -> None:
    """Off the request path: log each new (event, rule) violation once; with "drop", raise
    :class:`Blocked`."""
    assert settings.plan is not None
    broken = settings.plan.violations(msg)
    if not broken:
        return
    name = str(msg.get("event") or msg.get("type"))
    drop = settings.plan_violations == "drop"
    for rule in broken:
        if settings.plan.warned.first(name, rule):
            log.warning(
                "segment: %r breaks the tracking plan (%s)%s", name, rule, ": not sent" if drop else ""
            )
    if drop:
        raise Blocked(name)


def encode(msg: dict[str, Any]) -> bytes:
    """The message's JSON (UTF-8). orjson refuses what JSON can carry but UTF-8 cannot (a
    lone surrogate in a visitor's header or path) and integers beyond 64 bits; those
    messages are encoded by the standard library instead, with escapes, not lost.

    orjson's result keeps the whole buffer it grew while writing (4 KB behind a 1.2 KB page
    call). A body waits in the queue, up to MAX_QUEUE_SIZE of them through an outage, so it
    is copied to its own size: a queued body holds its own bytes, no more."""
    try:
        return bytes(memoryview(orjson.dumps(msg)))
    except orjson.JSONEncodeError:
        return json.dumps(msg, separators=(",", ":"), default=_isoformat).encode("ascii")


def _isoformat(value: Any) -> Any:
    """The standard library's ``default`` for what orjson writes itself (dates)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_second: tuple[int, str] = (-1, "")
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def iso_timestamp(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds; the date part is formatted once per second."""
    global _second
    whole = int(ts)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return cached[1] + _MILLIS[int((ts - whole) * 1000)]


def prepare(items: list[QueueItem], settings: Settings, ledger: Ledger) -> list[Encoded]:
    """The queued items' messages, each built once (:func:`build`; one already built when
    it was queued is taken as it is)."""
    ready: list[Encoded] = []
    for packed in items:
        if isinstance(packed, Encoded):
            ready.append(packed)
            continue
        try:
            item = Queued.unpack(packed)
        except Exception as exc:  # not a packed call: counted and logged like any other
            log.error("segment: could not build a queued message: %s", exc)
            ledger.count("failed", 1)
            continue
        encoded = build(item, settings, ledger)
        if encoded is not None:
            ready.append(encoded)
    return ready


def build(item: Queued, settings: Settings, ledger: Ledger) -> Encoded | None:
    """Finish and encode one call; None when it cannot go, settled in ``ledger`` here (a
    BEFORE_SEND that dropped it, a plan that blocks it, a message that cannot be built or
    is over 32 KB), each logged without its contents."""
    try:
        msg = finish(item, settings)
        if msg is None:
            ledger.dropped(1, "BEFORE_SEND returned None")
            return None
        body = encode(msg)
    except Blocked:
        ledger.count("blocked", 1)
        return None
    except Exception as exc:
        kind = "page" if item.message is None else item.message.get("type")
        log.error("segment: could not build a %s message: %s", kind, exc)
        ledger.count("failed", 1)
        return None
    if len(body) > MAX_MESSAGE_BYTES:
        log.error(
            "segment: dropped a %s message of %d bytes (over Segment's 32 KB limit), messageId %s",
            msg.get("type"),
            len(body),
            msg.get("messageId"),
        )
        ledger.count("failed", 1)
        return None
    return Encoded(kept_fields(msg), body)
