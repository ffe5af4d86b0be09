"""First-party collection: the app itself receives analytics.js's calls and plain JSON calls.

Framework-neutral: each adapter (``django/urls.py``, ``flask_collect.py``,
``asgi_collect.py``, ``wsgi_collect.py``) copies its request into a :class:`CollectRequest`,
calls :func:`handle` and writes the :class:`CollectResponse` back; none of them builds a
message. Routes, under the mount (``COLLECT_PREFIX``, ``/segment`` in the examples):

- ``POST v1/t|p|i|g|a|s``: one event as analytics-next's ``Segment.io`` plugin posts it when
  its ``apiHost`` is ``<site>/segment/v1`` (``text/plain`` JSON, ``writeKey`` in the body or
  as HTTP Basic); ``POST v1/b``: its batching strategy's ``{"batch": [...], "sentAt",
  "writeKey"}``. Exempt from CSRF: they carry no authority (see below).
- ``POST identify|track|page|group|alias``: the site's own JSON calls (``{"event": ...,
  "properties": ...}``, ``{"traits": ...}``, ...; ``application/json``); the framework's CSRF
  rules apply to them.
- ``POST flush``: staff only (403 otherwise).
- ``POST sources/<name>``: handed to :mod:`segment_middleware.sources` (404 while that module
  is absent); no origin check, no rate limit here: the source verifies its own signature.

What the server decides, never the body (a body can only describe an event, not claim who
made it, where from, or on whose behalf):

- ``userId`` is the app's signed-in user (the adapter's usual lookup, USER_ID), or absent;
  a body's ``userId`` is ignored. ``alias`` links the visitor's anonymousId to that user.
- ``anonymousId`` is the cookie's (then the ANONYMOUS_ID_HEADER's); the body's only when the
  request has neither.
- ``context.ip`` and ``context.userAgent`` come from the request (TRUSTED_PROXIES,
  ANONYMIZE_IP), ``context.consent`` from CONSENT when it is set; GPC, DNT and SHOULD_TRACK
  are honoured as for pages (the call is answered 200 and nothing is sent).

Each accepted event becomes a tracker call on a :class:`~segment_middleware.tracker.Tracker`
of the app's runtime, so it is checked, planned, counted, queued, batched and spooled like
any other. A request is all or nothing: every event is checked before the first is queued.
A request to the mount makes no page call of its own.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import hmac
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from . import assets
from .assets import AssetRoute, asset_route
from .context import RequestFacts, client_ip, request_context
from .identity import parse_anonymous_id
from .isotime import parse_iso
from .jsonable import jsonable
from .messages import MAX_MESSAGE_BYTES
from .ratelimit import TokenBuckets
from .tracker import Tracker, current

if TYPE_CHECKING:
    from .core import Runtime

__all__ = [
    "BROWSER_KINDS",
    "JSON_CALLS",
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "CollectRequest",
    "CollectResponse",
    "body_limit",
    "handle",
    "skip_page",
]

log = logging.getLogger("segment_middleware")

MAX_BATCH_BYTES = 500 * 1024  # Segment's limit for one batch a client posts
SOURCE_BODY_CAP = 16 * 1024 * 1024  # read no more for a webhook; each source has its own limit
# What the sender adds to a message besides the request's context: messageId, timestamp
# and the JSON punctuation around them, with room to spare.
_ENVELOPE_BYTES = 256

#: analytics-next's paths (the event type's first letter) and the call each one is.
BROWSER_KINDS = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}
JSON_CALLS = ("identify", "track", "page", "group", "alias")
#: Where analytics-next posts its telemetry (``/m`` under its apiHost).
TELEMETRY_ROUTE = "v1/m"
_BATCH_KINDS = frozenset(BROWSER_KINDS.values())

# Fields of each call besides the common ones, as the Segment Spec names them.
_CALL_FIELDS = {
    "track": ("event", "properties"),
    "page": ("name", "category", "properties"),
    "screen": ("name", "category", "properties"),
    "identify": ("traits",),
    "group": ("groupId", "traits"),
    "alias": ("previousId",),
}
# Accepted in every body; userId and anonymousId are read (anonymousId) or ignored (userId),
# never believed.
_COMMON_FIELDS = ("context", "integrations", "timestamp", "messageId", "userId", "anonymousId", "type")
# context keys that are the server's to say: a body's are dropped.
_SERVER_CONTEXT = ("ip", "userAgent")


@dataclasses.dataclass(slots=True)
class CollectRequest:
    """A request to the mount, as its adapter read it.

    ``body`` is None when it is longer than :func:`body_limit` allows (the adapter stops
    reading there). ``user_id`` and ``is_staff`` are the app's own answers, called at most
    once and only for a request that got that far. ``request`` is the framework's request,
    for the SHOULD_TRACK and CONSENT hooks."""

    method: str
    route: str  # the path under the mount, without its leading "/": "v1/t", "track"
    headers: Mapping[str, str]  # names in lower case
    body: bytes | None
    scheme: str
    path: str  # the full path the browser asked for (the mount's prefix included)
    query: str
    remote_addr: str | None
    user_id: Callable[[], str | None]
    is_staff: Callable[[], bool] = lambda: False
    request: Any = None


@dataclasses.dataclass(slots=True)
class CollectResponse:
    """What the adapter answers: a status, extra headers, a JSON body (or, for the
    analytics.js files of SERVE_ANALYTICS_JS, ``raw`` bytes of ``media_type``)."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    media_type: str = "application/json"
    raw: bytes | None = None

    @property
    def content(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.body)


class _Refused(Exception):
    """A request answered with an error: the status, the JSON error and the field it names."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field

    def response(self) -> CollectResponse:
        body: dict[str, Any] = {"success": False, "error": self.error}
        if self.field is not None:
            body["field"] = self.field
        return CollectResponse(self.status, body)


def body_limit(route: str) -> int:
    """The most bytes the adapter reads for ``route``: 32 KB for one event, 500 KB for a
    batch (Segment's limits), SOURCE_BODY_CAP for a webhook; longer bodies are 413."""
    if route.startswith("sources/"):
        return SOURCE_BODY_CAP
    return MAX_BATCH_BYTES if route == "v1/b" else MAX_MESSAGE_BYTES


def skip_page(tracker: Tracker | None) -> None:
    """The page call the app's middleware would make for this request: none. A post to the
    collection routes is a transport, not a page the visitor saw."""
    if tracker is not None and not tracker.ended:
        tracker.skip_request()


# ---------------------------------------------------------------------- per runtime
class _Collector:
    """What the routes keep per app runtime: its rate limiters, per visitor and per address."""

    def __init__(self, runtime: Runtime) -> None:
        rate = runtime.settings.rate_limit
        self.buckets = TokenBuckets(rate) if rate is not None else None
        per_ip = runtime.settings.ip_rate_limit
        self.ip_buckets = TokenBuckets(per_ip) if per_ip is not None else None


_collectors: weakref.WeakKeyDictionary[Runtime, _Collector] = weakref.WeakKeyDictionary()


def _collector(runtime: Runtime) -> _Collector:
    found = _collectors.get(runtime)
    if found is None:
        found = _collectors[runtime] = _Collector(runtime)
    return found


# ---------------------------------------------------------------------- the entry point
def handle(runtime: Runtime, req: CollectRequest) -> CollectResponse:
    """Answer one request to the mount. Never raises: what fails unexpectedly is logged
    (without the body) and answered 500."""
    skip_page(current())
    try:
        if req.route.startswith("sources/"):
            return _source(runtime, req)
        asset = asset_route(req.route)
        if asset is not None:
            return _asset(runtime, req, asset)
        response = _collect(runtime, req)
    except _Refused as refused:
        response = refused.response()
    except Exception:
        log.exception("segment: the collection route %r failed", req.route)
        response = CollectResponse(500, {"success": False, "error": "internal error"})
    response.headers.extend(_cors_headers(runtime, req))
    return response


def _collect(runtime: Runtime, req: CollectRequest) -> CollectResponse:
    route = req.route
    browser = route.startswith("v1/")
    if route == TELEMETRY_ROUTE and req.method == "POST":
        # analytics-next's own telemetry follows apiHost here: answered, not kept or sent
        return CollectResponse(200, {"success": True})
    if browser:
        if route[3:] not in BROWSER_KINDS and route != "v1/b":
            raise _Refused(404, "no such route")
    elif route not in JSON_CALLS and route != "flush":
        raise _Refused(404, "no such route")
    if req.method == "OPTIONS":
        return _preflight(runtime, req)
    if req.method != "POST":
        raise _Refused(405, "POST only")
    if not _origin_allowed(runtime, req):
        raise _Refused(403, "this origin may not post here (ALLOWED_ORIGINS)", "Origin")
    if route == "flush":
        return _flush(runtime, req)
    if req.body is None:
        limit = "500 KB a batch" if route == "v1/b" else "32 KB a message"
        raise _Refused(413, f"body too large (Segment's limit: {limit})")
    if not browser:
        kind = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise _Refused(415, "the body must be application/json", "Content-Type")
    body = _parse(req.body)
    if browser:
        _check_write_key(runtime, req, body)
    events = _events(route, body)
    return _accept(runtime, req, events, body.get("sentAt") if route == "v1/b" else None)


# ---------------------------------------------------------------------- checks
def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refused(400, "the body is not valid JSON", "body") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object", "body")
    return body


def _check_write_key(runtime: Runtime, req: CollectRequest, body: Mapping[str, Any]) -> None:
    """The body's writeKey (analytics-next also sends it as HTTP Basic) must be
    BROWSER_WRITE_KEY, else WRITE_KEY; with neither set (local store) any key is accepted.
    Compared in constant time; never echoed."""
    s = runtime.settings
    expected = s.browser_write_key or s.write_key
    if expected is None:
        return
    given = body.get("writeKey")
    if given is None:
        auth = req.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                given = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                given = None
    if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise _Refused(401, "wrong or missing write key", "writeKey")


def _events(route: str, body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(call, field prefix for errors, fields) for each event of the request."""
    if route == "v1/b":
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            raise _Refused(400, "batch must be a non-empty list of events", "batch")
        events = []
        for i, item in enumerate(batch):
            where = f"batch[{i}]"
            if not isinstance(item, dict):
                raise _Refused(400, "each event must be a JSON object", where)
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in _BATCH_KINDS:  # a list or object: unhashable
                raise _Refused(400, f"type must be one of {', '.join(sorted(_BATCH_KINDS))}", f"{where}.type")
            events.append((str(kind), f"{where}.", item))
        return events
    if route.startswith("v1/"):
        return [(BROWSER_KINDS[route[3:]], "", body)]
    allowed = set(_CALL_FIELDS[route]) | set(_COMMON_FIELDS)
    for key in body:
        if key not in allowed:
            raise _Refused(400, f"unknown field for {route}", key)
    return [(route, "", body)]


def _same_origin(origin: str, host: str | None, scheme: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if not host or not parts.netloc:
        return False
    return _netloc(parts.netloc, parts.scheme) == _netloc(host, scheme)


def _netloc(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    for default in (":80", ":443"):
        if netloc.endswith(default) and (scheme, default) in (("http", ":80"), ("https", ":443")):
            return netloc[: -len(default)]
    return netloc


def _origin_allowed(runtime: Runtime, req: CollectRequest) -> bool:
    """No Origin header (not a browser, or a same-origin request of a browser that leaves
    it out): allowed. Otherwise the site's own origin or one of ALLOWED_ORIGINS."""
    origin = req.headers.get("origin")
    if origin is None:
        return True
    if origin.rstrip("/").lower() in runtime.settings.allowed_origins:
        return True
    return _same_origin(origin, req.headers.get("host"), req.scheme)


def _cors_headers(runtime: Runtime, req: CollectRequest) -> list[tuple[str, str]]:
    """For a listed other origin: let its page read the answer (analytics-next reads the
    status to decide on a retry), with its cookies when it sends them."""
    origin = req.headers.get("origin")
    if origin is None or origin.rstrip("/").lower() not in runtime.settings.allowed_origins:
        return []
    if req.route.startswith("sources/"):
        return []
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def _preflight(runtime: Runtime, req: CollectRequest) -> CollectResponse:
    """A listed origin's preflight (analytics-next's Authorization header makes a
    cross-origin post non-simple). The site's own pages never need one."""
    origin = req.headers.get("origin")
    if origin is None or not _origin_allowed(runtime, req):
        raise _Refused(403, "this origin may not post here (ALLOWED_ORIGINS)", "Origin")
    headers = [("Access-Control-Allow-Methods", "POST"), ("Access-Control-Max-Age", "600")]
    asked = req.headers.get("access-control-request-headers")
    if asked:
        headers.append(("Access-Control-Allow-Headers", asked))
    return CollectResponse(204, {}, headers)


def _flush(runtime: Runtime, req: CollectRequest) -> CollectResponse:
    if not req.is_staff():
        raise _Refused(403, "flush is for staff users only")
    done = runtime.delivery.flush(runtime.settings.shutdown_timeout)
    return CollectResponse(200, {"success": True, "flushed": bool(done)})


# ---------------------------------------------------------------------- the events
def _page_facts(req: CollectRequest) -> RequestFacts:
    """The request's facts, its page being the one that made the call (the Referer), not
    the mount's own URL. analytics.js also sends its page in ``context.page``, which wins."""
    h = req.headers
    scheme, host, path, query = req.scheme, h.get("host") or "", req.path, req.query
    referer = h.get("referer")
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
            scheme, host, path, query = parts.scheme, parts.netloc, parts.path or "/", parts.query
    return RequestFacts(
        "GET",
        scheme,
        host,
        path,
        query,
        None,
        h.get("user-agent"),
        h.get("accept-language"),
        req.remote_addr,
        h.get("x-forwarded-for"),
    )


def _accept(
    runtime: Runtime, req: CollectRequest, events: list[tuple[str, str, dict[str, Any]]], sent_at: Any
) -> CollectResponse:
    s = runtime.settings
    h = req.headers
    facts = _page_facts(req)
    visit = runtime.begin(
        req.request,
        facts,
        h.get("cookie"),
        h.get(s.anonymous_id_header.lower()),
        h.get("sec-gpc"),
        h.get("dnt"),
    )
    if not visit.enabled:  # GPC, DNT, SHOULD_TRACK: nothing is sent, and nothing is wrong
        return CollectResponse(200, {"success": True})
    anonymous_id = None if visit.new_visitor else visit.anonymous_id
    if anonymous_id is None:  # no cookie nor header: the body's own, the first valid one
        for _, _, fields in events:
            candidate = fields.get("anonymousId")
            anonymous_id = parse_anonymous_id(candidate) if isinstance(candidate, str) else None
            if anonymous_id is not None:
                break
    user_id = req.user_id()
    visitor = (
        anonymous_id
        or (f"user:{user_id}" if user_id else None)
        or client_ip(req.remote_addr, h.get("x-forwarded-for"), s.trusted_proxies, False)
        or "unknown"
    )
    collector = _collector(runtime)
    address = client_ip(req.remote_addr, h.get("x-forwarded-for"), s.trusted_proxies, False)
    # The address first: a client inventing a new anonymousId per post has a new visitor
    # bucket each time, but only one address.
    for buckets, key, setting in (
        (collector.ip_buckets, address, "COLLECT_IP_RATE_LIMIT"),
        (collector.buckets, visitor, "COLLECT_RATE_LIMIT"),
    ):
        wait = buckets.take(key, len(events)) if buckets is not None and key else 0.0
        if wait > 0:
            runtime.delivery.ledger.count("limited", len(events))
            seconds = max(1, int(wait + 0.999))
            return CollectResponse(
                429,
                {"success": False, "error": f"too many events ({setting})"},
                [("Retry-After", str(seconds))],
            )
    if user_id is None and anonymous_id is None:
        raise _Refused(
            400, "no anonymousId (no cookie, header or body id) and no signed-in user", "anonymousId"
        )
    batch_sent_at = _time(sent_at, "sentAt") if sent_at is not None else None
    overhead = len(orjson.dumps(request_context(facts, s))) + _ENVELOPE_BYTES
    if s.integrations:
        overhead += len(orjson.dumps(s.default_integrations))
    calls: list[tuple[dict[str, Any], float]] = []

    def keep(msg: dict[str, Any], _facts: RequestFacts | None, ts: float) -> None:
        calls.append((msg, ts))

    tracker = Tracker(keep, user_id, anonymous_id, facts)
    now = _dt.datetime.now(_dt.timezone.utc)
    for kind, where, fields in events:
        before = len(calls)
        _call(tracker, kind, where, fields, anonymous_id, user_id, now, batch_sent_at)
        msg = calls[before][0]
        meta = fields.get("_metadata")
        if isinstance(meta, dict):
            msg["_metadata"] = _json(meta, f"{where}_metadata")
        if s.plan_violations == "raise" and s.plan is not None:
            broken = s.plan.violations(msg)
            if broken:
                raise _Refused(400, f"breaks the tracking plan: {'; '.join(broken)}", f"{where}properties")
        size = len(orjson.dumps(msg)) + overhead
        if size > MAX_MESSAGE_BYTES:
            raise _Refused(
                413, "the event is over Segment's 32 KB limit for one message", where.rstrip(".") or "body"
            )
    for msg, ts in calls:  # every event passed: queue them all
        runtime.sink(msg, facts, ts)
    return CollectResponse(200, {"success": True})


def _call(
    tracker: Tracker,
    kind: str,
    where: str,
    fields: Mapping[str, Any],
    anonymous_id: str | None,
    user_id: str | None,
    now: _dt.datetime,
    batch_sent_at: _dt.datetime | None,
) -> None:
    """One event as the tracker call it is; the body's fields checked, each error naming
    the field (``batch[2].properties``)."""
    options: dict[str, Any] = {}
    context = _mapping(fields, "context", where)
    if context:
        options["context"] = {k: v for k, v in context.items() if k not in _SERVER_CONTEXT}
        if tracker.facts is not None and tracker.facts.consent is not None:
            options["context"].pop("consent", None)  # CONSENT's answer, not the page's
    integrations = _mapping(fields, "integrations", where)
    if integrations is not None:
        options["integrations"] = integrations
    when = fields.get("timestamp")
    if when is not None:
        ts = _time(when, f"{where}timestamp")
        sent = fields.get("sentAt")
        sent_at = (
            batch_sent_at
            if batch_sent_at is not None
            else (_time(sent, f"{where}sentAt") if sent is not None else None)
        )
        if sent_at is not None:  # the browser's clock, corrected by how far it is from ours
            ts = ts + (now - sent_at)
        options["timestamp"] = min(ts, now)
    message_id = fields.get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str) or not message_id.strip() or len(message_id) > 256:
            raise _Refused(
                400, "messageId must be a non-empty string of at most 256 characters", f"{where}messageId"
            )
        options["message_id"] = message_id
    try:
        if kind == "track":
            event = fields.get("event")
            if not isinstance(event, str) or not event.strip():
                raise _Refused(400, "event must be a non-empty string", f"{where}event")
            tracker.track(event, _mapping(fields, "properties", where), **options)
        elif kind in ("page", "screen"):
            name = _text(fields, "name", where)
            category = _text(fields, "category", where)
            call = tracker.page if kind == "page" else tracker.screen
            call(name, _mapping(fields, "properties", where), category, **options)
        elif kind == "identify":
            tracker.identify(None, _mapping(fields, "traits", where), **options)
        elif kind == "group":
            group_id = fields.get("groupId")
            if isinstance(group_id, bool) or not isinstance(group_id, (str, int)) or not str(group_id):
                raise _Refused(400, "groupId must be a non-empty string", f"{where}groupId")
            tracker.group(group_id, _mapping(fields, "traits", where), **options)
        else:  # alias: from this visitor's anonymousId to the signed-in user, nothing else
            if user_id is None:
                raise _Refused(
                    400, "alias needs a signed-in user (the userId is the server's)", f"{where}userId"
                )
            if anonymous_id is None:
                raise _Refused(400, "alias needs the visitor's anonymousId", f"{where}previousId")
            tracker.alias(user_id, anonymous_id, **options)
    except (TypeError, ValueError) as exc:
        raise _Refused(400, _first_line(exc), f"{where}{_field_of(exc)}") from None


def _mapping(fields: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused(400, f"{key} must be a JSON object", f"{where}{key}")
    return value


def _text(fields: Mapping[str, Any], key: str, where: str) -> str | None:
    value = fields.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Refused(400, f"{key} must be a string", f"{where}{key}")
    return value


def _json(value: Any, where: str) -> Any:
    try:
        return jsonable(value, where)
    except (TypeError, ValueError) as exc:
        raise _Refused(400, _first_line(exc), where) from None


def _time(value: Any, where: str) -> _dt.datetime:
    """An ISO 8601 time from a body (analytics.js sends ``Date.toJSON()``); naive is UTC."""
    if not isinstance(value, str) or len(value) > 64:
        raise _Refused(400, "must be an ISO 8601 date-time string", where)
    try:
        return parse_iso(value)
    except ValueError:
        raise _Refused(400, "must be an ISO 8601 date-time string", where) from None


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:300]


def _field_of(exc: BaseException) -> str:
    """The field a tracker's error names first (``properties['a']: ...`` -> ``properties``)."""
    text = str(exc)
    head = text.split(":", 1)[0].split("[", 1)[0].split(" ", 1)[0]
    return {
        "user_id": "userId",
        "group_id": "groupId",
        "previous_id": "previousId",
        "message_id": "messageId",
    }.get(head, head)


# ---------------------------------------------------------------------- analytics.js itself
def _asset(runtime: Runtime, req: CollectRequest, route: AssetRoute) -> CollectResponse:
    """SERVE_ANALYTICS_JS's files (:mod:`segment_middleware.assets`); 404 when it is off."""
    if not runtime.settings.serve_analytics_js:
        raise _Refused(404, "no such route (SERVE_ANALYTICS_JS is off)")
    mount = req.path[: len(req.path) - len(req.route)].rstrip("/")
    site = f"{req.scheme}://{req.headers.get('host') or 'localhost'}{mount}"
    found = assets.for_runtime(runtime).serve(route, req.method, site)
    return CollectResponse(found.status, {}, list(found.headers), found.media_type, found.body)


# ---------------------------------------------------------------------- source functions
def _source(runtime: Runtime, req: CollectRequest) -> CollectResponse:
    """``POST sources/<name>``: :func:`segment_middleware.sources.handle`, which verifies the
    webhook's signature itself. 404 while that module is not installed."""
    name = req.route[len("sources/") :]
    if not name or "/" in name:
        raise _Refused(404, "no such source")
    if req.method != "POST":
        raise _Refused(405, "POST only")
    if req.body is None:
        raise _Refused(413, "body too large")
    try:
        from . import sources
    except ImportError as exc:
        if exc.name not in (f"{__package__}.sources", None):
            raise
        raise _Refused(404, "no such source") from None
    status, payload = sources.handle(runtime, name, req.body, req.headers)
    return CollectResponse(status, payload)
