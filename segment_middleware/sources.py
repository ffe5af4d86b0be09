"""Source functions: webhooks from other systems become Segment calls, in process.

    from segment_middleware.sources import source

    @source("payments", scheme="stripe")          # secret: SOURCE_SECRETS["payments"]
    def payments(payload, webhook):
        if payload["type"] == "charge.succeeded":
            charge = payload["data"]["object"]
            webhook.tracker(user_id=charge["metadata"]["user_id"]).track(
                "Order Completed", {"order_id": charge["metadata"]["order_id"]}
            )

The first-party collection mount routes ``POST <mount>/sources/<name>`` to :func:`handle`,
which answers:

- 404: no source of that name is registered;
- 413: the body is longer than the source's ``max_body``;
- 401: the signature is missing or wrong, or its signed timestamp is outside the replay
  window. Logged with the reason, never with the body; nothing is sent;
- 400: the verified body is not JSON;
- 500: no secret is configured for the source, or the function raised (logged with its
  traceback). Nothing the function did is sent;
- 200 ``{"success": true, "sent": <calls>}``: the function returned; its calls are queued.

The function's calls go to a buffer and are queued only once it returns: a function that
raises half-way sends nothing, and the sender retries the whole delivery. Retries of the
same webhook are the sender's way: pass ``message_id=`` built from the payload's own id, and
Segment de-duplicates them.

The secret, in the order looked up:

1. ``secret=`` given to :func:`source`: the secret itself (``str`` or ``bytes``), a list of
   them, or a callable with no arguments returning one of those, called on each request
   (to read a vault, or the settings of an app built after import);
2. the ``SOURCE_SECRETS`` setting's entry for the source's name (Django
   ``SEGMENT["SOURCE_SECRETS"] = {"payments": ...}``, Flask ``SEGMENT_SOURCE_SECRETS``,
   ASGI ``source_secrets=``), a string or a list of strings;
3. the environment variable ``SEGMENT_SOURCE_<NAME>_SECRET`` (the name upper-cased, ``-``
   and ``.`` as ``_``: ``SEGMENT_SOURCE_PAYMENTS_SECRET``).

A list holds several secrets while one is rotated: any of them verifies. With none found
the source answers 500 and logs which setting to set: it never runs unverified.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from .signatures import (
    GitHubSignature,
    HMACSignature,
    SignatureError,
    StaleTimestamp,
    StripeSignature,
    Verifier,
)
from .tracker import Tracker, checked_id

if TYPE_CHECKING:
    from .context import RequestFacts
    from .core import Runtime
    from .settings import Settings

__all__ = [
    "GitHubSignature",
    "HMACSignature",
    "SignatureError",
    "Source",
    "StaleTimestamp",
    "StripeSignature",
    "Verifier",
    "Webhook",
    "env_var",
    "handle",
    "registered",
    "source",
    "unregister",
]

log = logging.getLogger("segment_middleware")

SecretValue = str | bytes | Sequence[str | bytes]
Secret = SecretValue | Callable[[], SecretValue] | None
SourceFunction = Callable[[Any, "Webhook"], object]
F = TypeVar("F", bound=SourceFunction)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # one URL path segment
DEFAULT_MAX_BODY = 1024 * 1024
SCHEMES = ("hmac", "stripe", "github")


class _NoSecret(ValueError):
    """No usable secret for a source; the message names where one may be set."""


def env_var(name: str) -> str:
    """The environment variable read for source ``name``'s secret when nothing else sets it."""
    return "SEGMENT_SOURCE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_SECRET"


def _as_secrets(value: Any, where: str) -> tuple[bytes, ...]:
    """``value`` as a non-empty tuple of keys. Errors say where the bad value came from and
    its type, never the value."""
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, Sequence) or not items:
        raise _NoSecret(f"{where} must be a non-empty string or a list of them, got {type(value).__name__}")
    keys = []
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes) or not item:
            raise _NoSecret(f"{where} must hold non-empty strings, found {type(item).__name__}")
        keys.append(item)
    return tuple(keys)


@dataclass(frozen=True)
class Source:
    """A registered source function and how its requests are verified."""

    name: str
    function: SourceFunction
    verifier: Verifier
    secret: Secret = None
    max_body: int = DEFAULT_MAX_BODY

    def secrets(self, settings: Settings) -> tuple[bytes, ...]:
        """The keys that verify this source's requests now (see the module's docstring)."""
        if self.secret is not None:
            value = self.secret
            if callable(value):
                try:
                    value = value()
                except Exception as exc:  # its message might hold the secret: only its type
                    raise _NoSecret(f"source {self.name!r}: secret= raised {type(exc).__name__}") from None
            return _as_secrets(value, f"source {self.name!r}: secret=")
        configured = settings.source_secrets.get(self.name)
        if configured:
            return _as_secrets(configured, f"SOURCE_SECRETS[{self.name!r}]")
        from_env = os.environ.get(env_var(self.name))
        if from_env:
            return _as_secrets(from_env, env_var(self.name))
        raise _NoSecret(
            f"no secret for source {self.name!r}: pass secret= to @source, "
            f"or set SOURCE_SECRETS[{self.name!r}] or the environment variable {env_var(self.name)}"
        )

    def run(
        self, runtime: Runtime, body: bytes, headers: Mapping[str, str], now: float
    ) -> tuple[int, dict[str, Any]]:
        """One request, from the checks to the queued calls (:func:`handle`'s answers)."""
        if len(body) > self.max_body:
            log.warning(
                "segment: source %r: body of %d bytes over its max_body; refused", self.name, len(body)
            )
            return 413, {"success": False, "error": "body too large"}
        try:
            secrets = self.secrets(runtime.settings)
        except _NoSecret as exc:
            log.error("segment: %s", exc)
            return 500, {"success": False, "error": "source not configured"}
        try:
            self.verifier.verify(body, headers, secrets, now)
        except StaleTimestamp as exc:
            log.warning("segment: source %r: request refused, %s; body not logged", self.name, exc)
            return 401, {"success": False, "error": "stale timestamp"}
        except SignatureError as exc:
            log.warning("segment: source %r: request refused, %s; body not logged", self.name, exc)
            return 401, {"success": False, "error": "bad signature"}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("segment: source %r: a verified body is not JSON; refused", self.name)
            return 400, {"success": False, "error": "body is not JSON"}
        webhook = Webhook(self.name, headers, body, runtime)
        try:
            self.function(payload, webhook)
        except Exception:
            dropped = webhook.close()
            log.exception("segment: source %r raised; its %d call(s) were not sent", self.name, len(dropped))
            return 500, {"success": False, "error": "source function failed"}
        return 200, {"success": True, "sent": webhook.commit()}


class Webhook:
    """What a source function gets besides the payload: the request's ``headers`` (lower-case
    names; GitHub names its event in ``x-github-event``), its raw ``body``, and trackers.

    A tracker from :meth:`tracker` has every method of ``request.segment`` (``track``,
    ``identify``, ``ecommerce.order_completed``...) and no request context: the webhook's
    sender is another system, not the visitor. Its calls are checked at the call, as
    anywhere, kept, and queued together when the function returns; none if it raises.
    """

    __slots__ = ("_calls", "_open", "_runtime", "body", "headers", "name")

    def __init__(self, name: str, headers: Mapping[str, str], body: bytes, runtime: Runtime) -> None:
        self.name = name
        self.headers = headers
        self.body = body
        self._runtime = runtime
        self._calls: list[tuple[dict[str, Any], RequestFacts | None, float]] = []
        self._open = True

    @property
    def settings(self) -> Settings:
        """The settings of the runtime the calls will be queued to."""
        return self._runtime.settings

    def tracker(self, user_id: Any = None, anonymous_id: str | None = None) -> Tracker:
        """A tracker for the person the webhook is about: their ``user_id`` (your userId,
        looked up from the payload's customer), else an ``anonymous_id``."""
        uid = None if user_id is None else checked_id(user_id, "user_id")
        aid = None if anonymous_id is None else checked_id(anonymous_id, "anonymous_id")
        return Tracker(self._keep, user_id=uid, anonymous_id=aid)

    def _keep(self, msg: dict[str, Any], facts: RequestFacts | None, ts: float) -> None:
        """The trackers' sink. PLAN_VIOLATIONS = "raise" is checked here, at the call, as
        ``Runtime.sink`` does, so that a violation raises in the function, before anything
        is queued."""
        if not self._open:
            raise RuntimeError(f"source {self.name!r}: a call made after the function returned is not sent")
        s = self._runtime.settings
        if s.plan_violations == "raise" and s.plan is not None:
            broken = s.plan.violations(msg)
            if broken:
                name = msg.get("event") or msg.get("type")
                raise ValueError(f"{name!r} breaks the tracking plan {s.tracking_plan}: {'; '.join(broken)}")
        self._calls.append((msg, facts, ts))

    def close(self) -> list[tuple[dict[str, Any], RequestFacts | None, float]]:
        """No more calls; returns (and forgets) those kept."""
        self._open = False
        calls, self._calls = self._calls, []
        return calls

    def commit(self) -> int:
        """Queue every kept call, in order; returns how many."""
        calls = self.close()
        sink = self._runtime.sink
        for msg, facts, ts in calls:
            sink(msg, facts, ts)
        return len(calls)


# ---------------------------------------------------------------------- the registry
_sources: dict[str, Source] = {}
_lock = threading.Lock()


def _verifier(
    scheme: str | Verifier, header: str | None, timestamp_header: str | None, tolerance: float
) -> Verifier:
    if not isinstance(scheme, str):
        if header is not None or timestamp_header is not None:
            raise TypeError(
                "header= and timestamp_header= are for the built-in schemes; configure your verifier"
            )
        return scheme
    if scheme == "hmac":
        return HMACSignature(header or "x-signature", timestamp_header, tolerance)
    if timestamp_header is not None:
        raise TypeError(f"timestamp_header= is for scheme 'hmac'; {scheme!r} has its own")
    if scheme == "stripe":
        return StripeSignature(header or "stripe-signature", tolerance)
    if scheme == "github":
        return GitHubSignature(header or "x-hub-signature-256")
    raise ValueError(f"scheme must be one of {', '.join(SCHEMES)} or a Verifier, got {scheme!r}")


def source(
    name: str,
    *,
    secret: Secret = None,
    header: str | None = None,
    scheme: str | Verifier = "hmac",
    timestamp_header: str | None = None,
    tolerance: float = 300.0,
    max_body: int = DEFAULT_MAX_BODY,
) -> Callable[[F], F]:
    """Register the decorated ``function(payload, webhook)`` as source ``name``, served at
    ``POST <mount>/sources/<name>``.

    ``scheme``: ``"hmac"`` (``header``, default ``X-Signature``, holds the hex HMAC-SHA256
    of the body; with ``timestamp_header``, of ``b"<timestamp>." + body``, and the
    timestamp must be within ``tolerance`` seconds), ``"stripe"`` (``Stripe-Signature``,
    within ``tolerance``), ``"github"`` (``X-Hub-Signature-256``), or a :class:`Verifier`
    of your own. ``secret``: see the module's docstring. ``max_body``: longest body taken,
    in bytes (413 beyond).

    Registering a name twice raises ValueError, unless it is the same function again (a
    module imported a second time).
    """
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"source name must be 1-64 letters, digits, '_', '-' or '.', got {name!r}")
    verifier = _verifier(scheme, header, timestamp_header, tolerance)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ValueError("max_body must be a positive number of bytes")
    if secret is not None and not callable(secret):
        _as_secrets(secret, f"source {name!r}: secret=")  # a wrong type fails at import, not per request

    def register(function: F) -> F:
        if not callable(function):
            raise TypeError(f"@source({name!r}) decorates a function, got {type(function).__name__}")
        if inspect.iscoroutinefunction(function):
            raise TypeError(f"@source({name!r}): source functions are plain functions, not async def")
        with _lock:
            existing = _sources.get(name)
            if existing is not None and _where(existing.function) != _where(function):
                raise ValueError(f"source {name!r} is already registered by {_where(existing.function)}")
            _sources[name] = Source(name, function, verifier, secret, max_body)
        return function

    return register


def _where(function: Any) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', '?')}"


def registered() -> dict[str, Source]:
    """The registered sources by name (a copy)."""
    with _lock:
        return dict(_sources)


def unregister(name: str) -> None:
    """Forget source ``name`` (tests; a name not registered is ignored)."""
    with _lock:
        _sources.pop(name, None)


# ---------------------------------------------------------------------- the entry point
def handle(
    runtime: Runtime, name: str, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> tuple[int, dict[str, Any]]:
    """One ``POST <mount>/sources/<name>``: the HTTP status and a JSON-able body (see the
    module's docstring for each status). ``headers`` are the request's (names in any case);
    ``now`` (seconds since the epoch) is for tests. Never raises: what fails is logged and
    answered 500."""
    found = _sources.get(name)
    if found is None:
        return 404, {"success": False, "error": "no such source"}
    try:
        lowered = {key.lower(): value for key, value in headers.items()}
        return found.run(runtime, body, lowered, time.time() if now is None else now)
    except Exception:
        log.exception("segment: source %r failed", name)
        return 500, {"success": False, "error": "internal error"}
