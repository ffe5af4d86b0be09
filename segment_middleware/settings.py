"""One validated settings object for every adapter.

Settings are read once, when an adapter starts, and frozen: the request path never looks
anything up again. Each framework names the same setting differently (Django
``SEGMENT["FLUSH_AT"]``, Flask ``SEGMENT_FLUSH_AT``, ASGI ``flush_at``), so errors name the
setting the way the user wrote it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, NamedTuple

from .categories import Categories
from .ratelimit import DEFAULT_IP_RATE_LIMIT, DEFAULT_RATE_LIMIT, Rate, parse_ip_rate_limit, parse_rate_limit

if TYPE_CHECKING:
    from .plan import Plan

__all__ = [
    "ADVICE",
    "Problem",
    "Settings",
    "SettingsError",
    "UnknownSettingError",
    "advice",
    "load_callable",
    "problems",
]

DEFAULT_REDACT = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "key",
    "apikey",
    "api_key",
    "code",
    "email",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "signature",
    "sig",
    "otp",
    "ssn",
    "credit_card",
    "card",
)

# The only environment variables the contract names (SPEC section 2).
ENV_VARS = {
    "write_key": "SEGMENT_WRITE_KEY",
    "host": "SEGMENT_HOST",
    "exclude_paths": "SEGMENT_EXCLUDE_PATHS",
    "trusted_proxies": "SEGMENT_TRUSTED_PROXIES",
    "local_store": "SEGMENT_LOCAL_STORE",
    "cdn_url": "SEGMENT_CDN_URL",
    "public_api_token": "SEGMENT_PUBLIC_API_TOKEN",
    "public_api_host": "SEGMENT_PUBLIC_API_HOST",
}

_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_NAME = _COOKIE_NAME
_HTTP_METHODS = re.compile(r"^[A-Z]+$")


class SettingsError(ValueError):
    """A setting is invalid. The message names the setting as the user spelled it."""


def load_callable(value: Any, name: str) -> Callable[..., Any] | None:
    """Resolve a dotted path ("pkg.mod.func") or return a callable unchanged."""
    if value is None or callable(value):
        return value
    if isinstance(value, str) and "." in value:
        module, _, attr = value.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise SettingsError(f"{name}: cannot import {value!r} ({exc.__class__.__name__})") from None
        if callable(obj):
            return obj  # type: ignore[no-any-return]
    raise SettingsError(f"{name}: must be a callable or a dotted path to one, got {type(value).__name__}")


# -------------------------------------------------------------------- validators
def _split_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = _split_list(value)
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise SettingsError(f"{name}: must be a list of strings, got {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise SettingsError(f"{name}: must be a list of strings, found {type(item).__name__}")
    return items


def _write_key(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    # Never echo the value: it is a secret.
    if not isinstance(value, str):
        raise SettingsError(f"{name}: must be a string")
    if not value.isprintable() or any(c.isspace() for c in value) or len(value) > 256:
        raise SettingsError(f"{name}: contains whitespace or unprintable characters, or is too long")
    return value


def _user_ids(value: Any, name: str) -> Callable[[str], bool] | AbstractSet[str] | None:
    """SUPPRESSED_USERS: a callable ``user_id -> bool`` (or a dotted path to one), or a set
    of userIds kept by reference, so that ids the app adds later count too."""
    if value is None or callable(value) or isinstance(value, str):
        return load_callable(value, name)
    if not isinstance(value, AbstractSet):
        raise SettingsError(f"{name}: must be a set of userIds or a callable, got {type(value).__name__}")
    if not all(isinstance(item, str) for item in value):
        raise SettingsError(f"{name}: userIds are strings (as a message's userId is); found another type")
    return value


def _days(value: Any, name: str) -> float | None:
    if value is None:
        return None
    return float(_number(float, 0, inclusive=False)(value, name))


def _host(value: Any, name: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
        raise SettingsError(f"{name}: must be an http(s) URL (scheme, host, optional path), got {value!r}")
    return value.rstrip("/")


def _paths(value: Any, name: str) -> tuple[str, ...]:
    items = _str_list(value, name)
    for item in items:
        if not item.startswith("/"):
            raise SettingsError(f"{name}: path prefixes must start with '/', got {item!r}")
    return items


def _methods(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(m.upper() for m in _str_list(value, name))
    for item in items:
        if not _HTTP_METHODS.match(item):
            raise SettingsError(f"{name}: not an HTTP method: {item!r}")
    return items


def _token(pattern: re.Pattern[str], what: str) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise SettingsError(f"{name}: not a valid {what}: {value!r}")
        return value

    return check


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise SettingsError(f"{name}: must be True or False, got {value!r}")


def _number(
    kind: type, low: float, *, inclusive: bool = True, high: float | None = None
) -> Callable[[Any, str], Any]:
    def check(value: Any, name: str) -> Any:
        bound = f"{'>=' if inclusive else '>'} {low}" + ("" if high is None else f" and <= {high}")
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(value)
            if kind is int and isinstance(value, float) and value != number:
                raise ValueError
            if not math.isfinite(number):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise SettingsError(f"{name}: must be a number {bound}, got {value!r}") from None
        if not (number >= low if inclusive else number > low) or (high is not None and number > high):
            raise SettingsError(f"{name}: must be {bound}, got {value!r}")
        return number

    return check


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SettingsError(f"{name}: must be a string, got {type(value).__name__}")
    return value


_COOKIE_DOMAIN = re.compile(r"^[A-Za-z0-9._-]+$")


def _cookie_domain(value: Any, name: str) -> str | None:
    """COOKIE_DOMAIN goes into every ``Set-Cookie`` as is: a ``;`` or a space in it would
    add attributes of its own, so only host name characters pass."""
    value = _optional_str(value, name)
    if value is not None and not _COOKIE_DOMAIN.match(value):
        raise SettingsError(f"{name}: not a domain (letters, digits, '.', '-', '_'): {value!r}")
    return value


def _callable(value: Any, name: str) -> Callable[..., Any] | None:
    return load_callable(value, name)


def _callables(value: Any, name: str) -> tuple[Callable[..., Any], ...]:
    if value is None:
        return ()
    if callable(value) or isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise SettingsError(f"{name}: must be a list of callables")
    return tuple(load_callable(v, name) for v in value)  # type: ignore[misc]


def _proxies(value: Any, name: str) -> tuple[str, ...]:
    items = _str_list(value, name)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: not an IP address or network: {item!r}") from None
    return items


def _tracking_plan(value: Any, name: str) -> str | None:
    """The plan file is read and compiled here, so that a bad plan stops start-up."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise SettingsError(f"{name}: must be the path of a JSON or YAML file, got {type(value).__name__}")
    from .plan import PlanError, load_plan

    try:
        load_plan(os.fspath(value))
    except PlanError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return os.fspath(value)


PLAN_MODES = ("warn", "drop", "raise")


def _plan_violations(value: Any, name: str) -> str:
    if value not in PLAN_MODES:
        raise SettingsError(f"{name}: must be one of {', '.join(PLAN_MODES)}, got {value!r}")
    return str(value)


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{name}: must be a dict, got {type(value).__name__}")
    return dict(value)


def _integrations(value: Any, name: str) -> Mapping[str, Any]:
    """The default ``integrations`` object; its ``"events"`` key, when present, maps event
    names to the integrations of that event's track calls (merged over the default)."""
    integrations = dict(_mapping(value, name))
    events = integrations.get("events")
    if events is not None:
        if not isinstance(events, Mapping) or not all(
            isinstance(event, str) and isinstance(per, Mapping) for event, per in events.items()
        ):
            raise SettingsError(f"{name}: its 'events' key must map event names to integrations objects")
        integrations["events"] = {event: dict(per) for event, per in events.items()}
    return integrations


def _currency(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise SettingsError(f"{name}: must be a three-letter ISO 4217 code such as 'USD', got {value!r}")
    return value.upper()


def _redact(value: Any, name: str) -> tuple[str, ...]:
    return tuple(item.lower() for item in _str_list(value, name))


def _source_secrets(value: Any, name: str) -> Mapping[str, tuple[str, ...]]:
    """SOURCE_SECRETS: source name -> its webhook secret, or a list of them while one is
    rotated (segment_middleware.sources). Errors name the source, never a secret."""
    out: dict[str, tuple[str, ...]] = {}
    for source, secrets in _mapping(value, name).items():
        items = (secrets,) if isinstance(secrets, str) else secrets
        if (
            not isinstance(source, str)
            or not isinstance(items, (list, tuple))
            or not items
            or not all(isinstance(item, str) and item for item in items)
        ):
            raise SettingsError(
                f"{name}: each entry maps a source name to a non-empty string or a list of them"
                + (f" (see {source!r})" if isinstance(source, str) else "")
            )
        out[source] = tuple(items)
    return out


def _prefix(value: Any, name: str) -> str:
    """COLLECT_PREFIX: where the collection routes are mounted ("/segment"), without the
    trailing slash."""
    if not isinstance(value, str) or not re.fullmatch(r"/[^\s?#]*", value):
        raise SettingsError(f"{name}: must be a path starting with '/', got {value!r}")
    return value.rstrip("/") or "/"


_ORIGIN = re.compile(r"^https?://[^\s/?#@]+$")


def _origins(value: Any, name: str) -> tuple[str, ...]:
    """ALLOWED_ORIGINS: ``scheme://host[:port]`` as browsers send the Origin header."""
    items = _str_list(value, name)
    for item in items:
        if not _ORIGIN.match(item.rstrip("/")):
            raise SettingsError(f"{name}: not an origin (scheme://host[:port]): {item!r}")
    return tuple(item.rstrip("/").lower() for item in items)


def _rate_limit(value: Any, name: str) -> str | None:
    """COLLECT_RATE_LIMIT, checked here and kept as written (``Settings.rate_limit`` is
    its parsed form); None, False and "" turn the limit off."""
    try:
        return None if parse_rate_limit(value) is None else str(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _ip_rate_limit(value: Any, name: str) -> str | None:
    """COLLECT_IP_RATE_LIMIT, checked here and kept as written (``Settings.ip_rate_limit`` is
    its parsed form, which depends on COLLECT_RATE_LIMIT for a multiple like ``"10x"``)."""
    try:
        parse_ip_rate_limit(value, Rate(1.0, 1))
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}, or a multiple of the visitor's limit like '10x'") from None
    return None if value is None or value is False or value == "" else str(value)


def _flush_at(value: Any, name: str) -> int:
    number = _number(int, 1)(value, name)
    if number > 100:
        raise SettingsError(
            f"{name}: at most 100 messages per batch here (the SDK's default; Segment's own limit is "
            f"500 KB a batch, which the sender keeps to), got {value!r}"
        )
    return int(number)


def _category_names(value: Any, name: str) -> tuple[str, ...]:
    """A consent category, or a list of them (a message needs every one granted)."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(c, str) and c for c in items):
        raise SettingsError(f"{name}: must be a category name or a list of them")
    return tuple(items)


def _event_categories(value: Any, name: str) -> Mapping[str, tuple[str, ...]]:
    """EVENT_CATEGORIES: event name or glob -> its consent category (or a list of them)."""
    out: dict[str, tuple[str, ...]] = {}
    for event, categories in _mapping(value, name).items():
        if not isinstance(event, str) or not event:
            raise SettingsError(f"{name}: keys must be event names or globs (non-empty strings)")
        try:
            out[event] = _category_names(categories, name)
        except SettingsError:
            raise SettingsError(
                f"{name}: {event!r} must map to a category name or a list of them"
            ) from None
        if not out[event]:
            raise SettingsError(f"{name}: {event!r} must map to a category name or a list of them")
    return out


_SPACE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _directory(value: Any, name: str) -> str | None:
    """An existing directory (checked at start-up, so a typo does not surface as a 404)."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.path.isdir(value):
        raise SettingsError(f"{name}: must be the path of an existing directory, got {value!r}")
    return os.fspath(value)


def _json_object_file(value: Any, name: str) -> str | None:
    """A readable file holding one JSON object, read once here so that a bad file stops start-up."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise SettingsError(f"{name}: must be the path of a JSON file, got {type(value).__name__}")
    try:
        with open(value, "rb") as file:
            parsed = json.load(file)
    except (OSError, ValueError) as exc:
        raise SettingsError(
            f"{name}: cannot read a JSON file at {os.fspath(value)!r} ({exc.__class__.__name__})"
        ) from None
    if not isinstance(parsed, dict):
        raise SettingsError(f"{name}: the file must hold a JSON object")
    return os.fspath(value)


def _space_id(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SPACE_ID.match(value):
        raise SettingsError(f"{name}: not a Segment space id (letters, digits, '_' and '-')")
    return value


# -------------------------------------------------------------------- the table
def _setting(
    error_id: str,
    check: Callable[[Any, str], Any],
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """One row of the settings table: the default, the check that validates (and
    normalises) a value, and the stable id the Django system check reports it under. The
    string literal under the row documents it (the settings reference is made from it)."""
    metadata = {"check": check, "id": f"segment.{error_id}"}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable, with the SDK's defaults for delivery: one row per setting.

    However it is built (``Settings(...)``, :meth:`from_sources`, :meth:`replace`), every
    value is validated and normalised at construction; the request path never checks again.
    """

    # One row per setting, in check-id order; the string under a row is that setting's
    # documentation: the settings reference (docs/settings.md) is generated from it.
    write_key: str | None = _setting("E001", _write_key, None, secret=True)
    """The source's write key. No key: events go to the local store (``LOCAL_STORE``), never an error; ``check
    --deploy`` warns (``segment.W101``) when ``DEBUG`` is off. Never printed."""
    host: str = _setting("E002", _host, "https://api.segment.io")
    """Any Segment-compatible endpoint: ``https://events.eu1.segmentapis.com`` for the EU region, RudderStack,
    a proxy, a test server."""
    exclude_paths: tuple[str, ...] = _setting("E003", _paths, ("/health", "/favicon.ico"))
    """Path prefixes that send nothing and get no cookie, matched against the path the app's own routes see
    (without a mount's ``SCRIPT_NAME`` / ``root_path``) on every adapter. From the environment:
    comma-separated."""
    page_methods: tuple[str, ...] | None = _setting("E004", _methods, None)
    """HTTP methods that send the page call (``None``: all of them)."""
    anonymous_id_cookie: str = _setting("E005", _token(_COOKIE_NAME, "cookie name"), "ajs_anonymous_id")
    """The cookie the anonymousId is read from and written to (analytics.js's own)."""
    anonymous_id_header: str = _setting("E006", _token(_HEADER_NAME, "header name"), "X-Anonymous-Id")
    """The header the anonymousId is read from when the cookie is absent (mobile apps, other services)."""
    set_cookie: bool = _setting("E007", _bool, True)
    """Set the anonymousId cookie for a visitor who had no valid id."""
    cookie_domain: str | None = _setting("E008", _cookie_domain, None)
    """The cookie's ``Domain`` (``None``: host-only). Set ``.example.com`` to share the id across
    subdomains."""
    cookie_max_age: int = _setting("E009", _number(int, 0), 365 * 24 * 3600)
    """The cookie's lifetime in seconds (one year)."""
    user_id: Callable[[Any], str | None] | None = _setting("E010", _callable, None)
    """Callable or dotted path ``request -> str or None`` for the ``userId`` (``None``: the framework's user:
    Django ``request.user.pk``, Flask-Login's ``current_user``, else ``g.user``; Starlette's
    ``AuthenticationMiddleware``; plain WSGI: none)."""
    should_track: Callable[[Any], bool] | None = _setting("E011", _callable, None)
    """Callable or dotted path ``request -> bool``; false: the request is untracked (no page call, no cookie,
    a tracker whose calls are dropped)."""
    include_query_params: bool = _setting("E012", _bool, False)
    """Add the parsed (redacted) query string as ``properties.query`` of the page call."""
    redact_query_params: tuple[str, ...] = _setting("E013", _redact, DEFAULT_REDACT)
    """Query parameters whose values are replaced by ``[REDACTED]`` in url, search and referrer (token,
    password, secret, key, code, email and the like; case-insensitive)."""
    trusted_proxies: tuple[str, ...] = _setting("E014", _proxies, ())
    """IPs and networks whose ``X-Forwarded-For`` is believed for ``context.ip`` (none: the peer address is
    used). From the environment: comma-separated."""
    anonymize_ip: bool = _setting("E015", _bool, False)
    """Zero the last IPv4 octet / the last 80 IPv6 bits of ``context.ip``."""
    honor_gpc: bool = _setting("E016", _bool, True)
    """``Sec-GPC: 1`` requests are untracked (no page call, no cookie)."""
    honor_dnt: bool = _setting("E017", _bool, False)
    """``DNT: 1`` requests are untracked (no page call, no cookie)."""
    consent: Callable[[Any], Mapping[str, bool]] | None = _setting("E018", _callable, None)
    """Callable or dotted path ``request -> dict[str, bool]`` of consent categories, sent as
    ``context.consent.categoryPreferences``."""
    identify_traits: Callable[[Any], Mapping[str, Any]] | None = _setting("E019", _callable, None)
    """Callable or dotted path ``user -> dict`` of traits for the identify sent at log-in."""
    tracking_plan: str | None = _setting("E020", _tracking_plan, None)
    """A JSON or YAML tracking plan (Segment Protocols' shape, JSON Schema draft 7; see the tracking plans
    guide); read and checked at start-up."""
    plan_violations: str = _setting("E021", _plan_violations, "warn")
    """What a call that breaks the tracking plan does: ``warn`` logs once per event and rule and sends;
    ``drop`` does not send and counts it in ``stats()["blocked"]``; ``raise`` raises ``ValueError`` at the
    call."""
    before_send: tuple[Callable[[dict[str, Any]], dict[str, Any] | None], ...] = _setting(
        "E022", _callables, ()
    )
    """Callables (or dotted paths) ``message -> message or None``: enrich, route or drop (``None``) each
    message. They run on the sender thread, not in the request."""
    integrations: Mapping[str, Any] = _setting("E023", _integrations, factory=dict)
    """The default ``integrations`` object; its ``"events"`` key maps an event name to that event's own
    (``{"All": True, "events": {"Order Completed": {"Mixpanel": False}}}``), merged over the default and under
    a call's ``integrations=``."""
    flush_at: int = _setting("E024", _flush_at, 100)
    """Messages per batch (at most 100; the SDK's default)."""
    flush_interval: float = _setting("E025", _number(float, 0, inclusive=False), 0.5)
    """Seconds the sender waits for a batch to fill before posting what it has."""
    max_queue_size: int = _setting("E026", _number(int, 1), 10000)
    """Messages waiting in memory; beyond that new messages overflow to disk (deferred rows,
    ``stats()["deferred"]``)."""
    max_retries: int = _setting("E027", _number(int, 0), 10)
    """Retries of a failed batch, with the SDK's exponential backoff and ``Retry-After`` on 429."""
    timeout: float = _setting("E028", _number(float, 0, inclusive=False), 15.0)
    """Seconds one post to the endpoint may take."""
    gzip: bool = _setting("E029", _bool, False)
    """Gzip the batches' bodies."""
    shutdown_timeout: float = _setting("E030", _number(float, 0), 5.0)
    """The longest a process exit waits to flush, in seconds; what is left then goes to the spool."""
    spool: bool = _setting("E031", _bool, True)
    """Keep batches that fail after all retries for ``replay``, and take what a full queue cannot (deferred
    rows, sent by the sender itself); off: both are dropped, counted and logged."""
    auto_replay: bool = _setting("E032", _bool, False)
    """Replay the spool by itself once the endpoint answers again."""
    local_store: str = _setting(
        "E033", _token(re.compile(r"^[^\x00]+$"), "file path"), ".segment/events.sqlite3"
    )
    """The embedded SQLite store's path: the events when there is no write key, and the spool."""
    cdn_url: str = _setting("E034", _host, "https://cdn.segment.com")
    """Where the snippet loads analytics.js from (a proxy or a self-hosted copy)."""
    default_currency: str | None = _setting("E035", _currency, None)
    """ISO 4217 code (``"USD"``) filled into ``currency`` of the spec events that have one, when a call leaves
    it out."""
    reset_on_logout: bool = _setting("E036", _bool, True)
    """On log-out (Django ``user_logged_out``, Flask-Login ``user_logged_out``) the rest of the request and
    the visitor's next requests get a fresh anonymousId, in a new cookie (analytics.js ``reset()``): the next
    person on a shared device is not stitched to the last one."""
    auth_events: bool = _setting("E037", _bool, False)
    """Send the B2B ``Signed In`` event after the log-in identify, ``Signed Out`` (as the user leaving) on
    log-out, and (Django) ``Signed Up`` when an anonymous visitor's request creates a user (Flask-Login has no
    sign-up signal: call ``request.segment.b2b.signed_up()`` in your sign-up view)."""
    alias_on_signup: bool = _setting("E038", _bool, False)
    """(Django) when an anonymous visitor's request creates a user, send an ``alias`` from the anonymousId to
    the new userId, for destinations that need one (Mixpanel's original ID merge, Kissmetrics)."""
    max_in_flight: int = _setting("E039", _number(int, 1, high=16), 3)
    """Most batches posted at once (1-16), each on its own kept-alive connection: another sender starts only
    while every one has waited on the endpoint for 0.25 s with a backlog queued."""
    spool_max_mb: float = _setting("E040", _number(float, 0, inclusive=False), 512.0)
    """Most megabytes of messages waiting on disk (spooled and deferred); past it the oldest are evicted,
    counted in ``stats()["dropped"]`` and logged."""
    track_unmatched_routes: bool = _setting("E041", _bool, False)
    """Track a 404 for which the app's router matched no route (Django ``request.resolver_match`` is None,
    Flask ``request.url_rule`` is None, Starlette/FastAPI: no route in the scope); off, such requests send
    nothing and get no cookie, while a view's own 404 is tracked. Never tracked whatever the settings:
    Django's ``STATIC_URL`` and ``MEDIA_URL`` when they are paths, django-debug-toolbar's URLs, Flask's
    ``static`` and ``<blueprint>.static`` endpoints."""
    public_api_token: str | None = _setting("E042", _write_key, None, secret=True)
    """A Segment Public API token (workspace owner, or a role that may create regulations):
    ``privacy.delete_user`` and ``segment-middleware delete-user`` / ``regulations`` file and list deletions
    with it (the guide: Deleting users). Never printed."""
    public_api_host: str = _setting("E043", _host, "https://api.segmentapis.com")
    """The Public API's base URL (``https://eu1.api.segmentapis.com`` for the EU workspace region, or a test
    server)."""
    delete_on_user_delete: bool = _setting("E044", _bool, False)
    """(Django) deleting a user row (``AUTH_USER_MODEL``) files its deletion as ``privacy.delete_user`` does,
    once the transaction commits (nothing on rollback)."""
    suppressed_users: Callable[[str], bool] | AbstractSet[str] | None = _setting("E045", _user_ids, None)
    """A set of userIds (read at each message: ids added later count) or a callable ``user_id -> bool`` (or
    its dotted path): messages with such a userId are never sent nor stored, counted in
    ``stats()["blocked"]``; checked as the message is built (a callable: on the sender thread), before
    ``BEFORE_SEND`` and again on what it returns; a callable that raises blocks the message."""
    local_store_retention_days: float | None = _setting("E046", _days, None)
    """Rows of the local store (local events, the spool, rows already sent) older than this many days are
    deleted (``None``: kept), checked when the store is written to and at most hourly; rows a process is
    sending at that moment stay."""
    source_secrets: Mapping[str, tuple[str, ...]] = _setting(
        "E047", _source_secrets, factory=dict, secret=True
    )
    """Webhook secrets of source functions: source name -> its secret, or a list of secrets while one is
    rotated (any one verifies); a source without ``secret=`` and without an entry here reads the environment
    variable ``SEGMENT_SOURCE_<NAME>_SECRET``. Never printed."""
    collect_prefix: str = _setting("E048", _prefix, "/segment")
    """Where the first-party collection routes are mounted (the path you give ``include()``, ``url_prefix``,
    ``prefix``): the snippet's first-party mode points analytics.js there."""
    browser_write_key: str | None = _setting("E049", _write_key, None, secret=True)
    """The write key analytics.js bodies must carry to the collection routes (``v1/...``; ``None``:
    ``WRITE_KEY``); a wrong or missing one is answered 401. With neither key set (local store), any is
    accepted. Never printed."""
    allowed_origins: tuple[str, ...] = _setting("E050", _origins, ())
    """Origins (``https://shop.example.com``) besides the site's own whose browser posts the collection routes
    accept (answered with CORS headers); a post from any other origin is refused with 403."""
    collect_rate_limit: str | None = _setting("E051", _rate_limit, DEFAULT_RATE_LIMIT)
    """Events a visitor (its anonymousId, else its IP) may post to the collection routes: a token bucket per
    process (``"600/m"``, ``"5/s burst 50"``; ``None``: no limit); over it, 429 with ``Retry-After``, counted
    in ``stats()["limited"]``."""
    event_categories: Mapping[str, tuple[str, ...]] = _setting("E052", _event_categories, factory=dict)
    """Event name or glob (``"Order *"``) -> the consent category its track calls need (or a list: all of
    them); exact names first, then globs in order. With ``CONSENT`` set, a call whose category the visitor's
    answer does not grant (``True``) is not sent, counted in ``stats()["blocked"]``; outside a request it is
    sent (no visitor to ask). See the consent guide."""
    page_category: tuple[str, ...] = _setting("E053", _category_names, ())
    """The consent category (or list) of page and screen calls, the automatic page call included; refused as
    ``EVENT_CATEGORIES`` says."""
    space_id: str | None = _setting("E054", _space_id, None)
    """The Unify (Personas) space id for ``request.segment.profile`` (Unify settings, API access)."""
    profiles_token: str | None = _setting("E055", _write_key, None, secret=True)
    """The Profile API access token of that space, sent as HTTP Basic user name. Never printed."""
    profiles_host: str = _setting("E056", _host, "https://profiles.segment.com")
    """The Profile API's base URL (``https://profiles.euw1.segment.com`` for the EU, or a test server)."""
    profile_timeout: float = _setting("E057", _number(float, 0, inclusive=False, high=30), 0.2)
    """Seconds a ``profile.traits()`` / ``audiences()`` call may take; past it the call returns ``None``
    (logged once) and the answer, when it comes, fills the cache for the next request."""
    profile_cache_ttl: float = _setting("E058", _number(float, 0), 60.0)
    """Seconds a profile's traits and audiences are kept in this process (0: not kept)."""
    serve_analytics_js: bool = _setting("E059", _bool, False)
    """The collection mount also serves analytics.js (``analytics.js/v1/<key>/analytics.min.js``, the chunks
    it loads, ``v1/projects/<key>/settings``), from ``ANALYTICS_JS_DIR`` / ``ANALYTICS_JS_SETTINGS`` or
    fetched from ``CDN_URL`` and cached; the snippet then loads it from the site, so the browser needs no
    other host. See the first-party guide."""
    analytics_js_dir: str | None = _setting("E060", _directory, None)
    """A directory holding analytics.js for ``SERVE_ANALYTICS_JS``: ``analytics.min.js`` (or npm's
    ``standalone.js``: ``@segment/analytics-next/dist/umd``) and its chunk files; ``None``: fetched from
    ``CDN_URL``."""
    analytics_js_settings: str | None = _setting("E061", _json_object_file, None)
    """A JSON file served as the source's settings (``v1/projects/<key>/settings``) for
    ``SERVE_ANALYTICS_JS``; ``None``: fetched from ``CDN_URL`` (with no write key, a minimal one whose only
    destination is this site)."""
    analytics_js_cache_ttl: float = _setting("E062", _number(float, 0), 300.0)
    """Seconds the bundle and settings fetched from ``CDN_URL`` are kept (in memory and in the ``cdn-cache``
    folder next to ``LOCAL_STORE``) before they are fetched again; content-hashed chunks are kept for good.
    When the CDN cannot be reached the last copy is served."""
    collect_ip_rate_limit: str | None = _setting("E063", _ip_rate_limit, DEFAULT_IP_RATE_LIMIT)
    """Events one client address (its IP as ``TRUSTED_PROXIES`` says) may post to the collection routes,
    besides ``COLLECT_RATE_LIMIT``'s per visitor: a rate (``"200/s burst 2000"``), ``"10x"`` (that many times
    the visitor's limit; off when it is off), or ``None`` (no limit). It stops a client that makes up a new
    anonymousId for each post; over it, 429 with ``Retry-After``, counted in ``stats()["limited"]``."""

    def __post_init__(self) -> None:
        values, problems = check_values(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "kwarg"
        )
        if problems:
            raise SettingsError(problems[0].message)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- construction
    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_sources(
        cls,
        explicit: Mapping[str, Any] | None = None,
        framework: Mapping[str, Any] | None = None,
        *,
        style: str = "kwarg",
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Merge explicit kwargs > framework config > environment, then validate.

        ``framework`` keys are lowercase setting names (adapters translate their own
        spelling); ``style`` only changes how errors name a setting. Raises the first
        problem; :func:`problems` lists them all.
        """
        values, found = check_values(merge_sources(explicit, framework, environ), style)
        if found:
            raise SettingsError(found[0].message)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated like the rest."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- derived facts
    @functools.cached_property
    def redact_words(self) -> frozenset[str]:
        """REDACT_QUERY_PARAMS as a set: built once, and its hash is computed once (it keys
        the sender's caches of parsed queries)."""
        return frozenset(self.redact_query_params)

    @functools.cached_property
    def plan(self) -> Plan | None:
        """TRACKING_PLAN, compiled (already checked at construction)."""
        from .plan import load_plan

        return None if self.tracking_plan is None else load_plan(self.tracking_plan)

    @functools.cached_property
    def default_integrations(self) -> dict[str, Any]:
        """INTEGRATIONS without its per-event part."""
        return {key: value for key, value in self.integrations.items() if key != "events"}

    @functools.cached_property
    def event_integrations(self) -> dict[str, dict[str, Any]]:
        """INTEGRATIONS["events"]: event name -> that event's integrations."""
        return dict(self.integrations.get("events") or {})

    @functools.cached_property
    def is_suppressed(self) -> Callable[[str], bool] | None:
        """SUPPRESSED_USERS as one test of a userId: the callable itself, or membership of
        the set (read at each call: the app may add to it); None when unset."""
        value = self.suppressed_users
        if value is None or callable(value):
            return value
        return value.__contains__

    @functools.cached_property
    def builds_when_queued(self) -> bool:
        """Messages are built and encoded on the calling thread as they are queued, unless
        building one runs the app's code (BEFORE_SEND, a SUPPRESSED_USERS callable) or checks
        the tracking plan (PLAN_VIOLATIONS "warn" or "drop"): those stay on the sender thread,
        so that a slow hook or schema never slows a request.

        Why not always on the sender: a sender that builds a burst of a few hundred messages
        holds the GIL for milliseconds, and every request of its worker that wants the GIL
        back meanwhile waits (bench/README.md: this is most of the tail the package adds).
        Built where it is queued, a page call costs its request a few microseconds, and the
        sender is left with the posts."""
        plan_checked = self.tracking_plan is not None and self.plan_violations != "raise"
        return not (self.before_send or callable(self.suppressed_users) or plan_checked)

    @functools.cached_property
    def consent_categories(self) -> Categories | None:
        """EVENT_CATEGORIES and PAGE_CATEGORY compiled; None when there is nothing to decide
        (no CONSENT answer to check, or no category configured)."""
        if self.consent is None or not (self.event_categories or self.page_category):
            return None
        return Categories(self.event_categories, self.page_category)

    @functools.cached_property
    def rate_limit(self) -> Rate | None:
        """COLLECT_RATE_LIMIT parsed (already checked at construction); None: off."""
        return parse_rate_limit(self.collect_rate_limit)

    @functools.cached_property
    def ip_rate_limit(self) -> Rate | None:
        """COLLECT_IP_RATE_LIMIT parsed, a multiple resolved against COLLECT_RATE_LIMIT."""
        return parse_ip_rate_limit(self.collect_ip_rate_limit, self.rate_limit)

    @property
    def uses_store(self) -> bool:
        """No write key: messages go to the embedded store instead of the network."""
        return not self.write_key

    def __repr__(self) -> str:  # pragma: no cover - trivial, but must never leak the key
        key = "set" if self.write_key else "unset"
        return f"Settings(write_key=<{key}>, host={self.host!r}, local_store={self.local_store!r})"


class Problem(NamedTuple):
    """One invalid setting: its stable id (``segment.E0NN``) and the message naming it."""

    id: str
    message: str


UNKNOWN_ID = "segment.E000"


def merge_sources(
    explicit: Mapping[str, Any] | None,
    framework: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Explicit kwargs > framework config > the environment variables SPEC 2 names."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, var in ENV_VARS.items():
        raw = env.get(var)
        if raw is not None and raw != "":
            values[field] = _split_list(raw) if field in ("exclude_paths", "trusted_proxies") else raw
    for source in (framework or {}), (explicit or {}):
        values.update(source)
    return values


def check_values(values: Mapping[str, Any], style: str) -> tuple[dict[str, Any], list[Problem]]:
    """Every value validated and normalised by its row's check; every problem found."""
    rows = {f.name: f for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    found = [Problem(UNKNOWN_ID, unknown_setting(key, style)) for key in values if key not in rows]
    for key, value in values.items():
        row = rows.get(key)
        if row is None:
            continue
        try:
            out[key] = row.metadata["check"](value, display_name(key, style))
        except SettingsError as exc:
            found.append(Problem(row.metadata["id"], hide_secrets(str(exc), values)))
    return out, found


_SECRET_LABELS = {
    "write_key": "<the write key>",
    "public_api_token": "<the Public API token>",
    "profiles_token": "<the Profile API token>",
    "source_secrets": "<a source secret>",
}


def secret_texts(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(text, what to show instead) for every secret among these settings' values (the
    rows marked ``secret``: the write keys, the API tokens, the source secrets), longest
    first; texts under 4 characters are left alone (they would mask ordinary words)."""
    found: list[tuple[str, str]] = []
    for name in SECRET_SETTINGS:
        value = values.get(name)
        items = value.values() if isinstance(value, Mapping) else (value,)
        for item in items:
            texts = (item,) if isinstance(item, (str, bytes)) else item if isinstance(item, Iterable) else ()
            for text in texts:
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                if isinstance(text, str) and len(text) >= 4:
                    found.append((text, _SECRET_LABELS.get(name, f"<the {name.upper()}>")))
    return sorted(found, key=lambda pair: -len(pair[0]))


def hide_secrets(message: str, values: Mapping[str, Any]) -> str:
    """``message`` with every secret of ``values`` replaced by its setting's name: a key
    pasted into the wrong setting must not be echoed by the error naming that setting."""
    for text, shown in secret_texts(values):
        message = message.replace(text, shown)
    return message


def problems(
    explicit: Mapping[str, Any] | None = None,
    framework: Mapping[str, Any] | None = None,
    *,
    style: str = "kwarg",
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every invalid setting in these sources, each with its stable id (Django's checks)."""
    return check_values(merge_sources(explicit, framework, environ), style)[1]


#: Warnings about settings that are each valid but do nothing together: id -> message.
ADVICE: dict[str, str] = {
    "segment.W102": "EVENT_CATEGORIES or PAGE_CATEGORY is set but CONSENT is not: with no visitor's "
    "answer to check, no event is held back for its category",
}


def advice(settings: Settings) -> list[Problem]:
    """The :data:`ADVICE` that applies to ``settings``: logged once when a runtime starts,
    and shown by Django's ``manage.py check``."""
    found: list[Problem] = []
    if (settings.event_categories or settings.page_category) and settings.consent is None:
        found.append(Problem("segment.W102", ADVICE["segment.W102"]))
    return found


def unknown_setting(key: str, style: str) -> str:
    """The error for a key no row has, with the nearest row's name when one is close: a
    misspelt key is otherwise silently ignored, and the setting it meant left at its
    default. ``key`` is a lowercase name as :func:`check_values` takes it; the suggestion
    is spelled as the user writes a setting there (Django: the ``SEGMENT`` dict's key)."""
    message = f"{display_name(key, style)}: unknown setting"
    close = difflib.get_close_matches(key.lower(), Settings.names(), n=1)
    if close:
        near = close[0].upper() if style == "django" else display_name(close[0], style)
        message += f" (did you mean {near}?)"
    return message


class UnknownSettingError(SettingsError, TypeError):
    """``Settings(...)`` got a keyword no row has: a TypeError, as any unexpected keyword,
    and a SettingsError, with the nearest name in its message."""


def _suggesting_init(init: Callable[..., None]) -> Callable[..., None]:
    """The dataclass's ``__init__``, first turning an unknown keyword into
    :class:`UnknownSettingError` (the plain TypeError names no alternative)."""

    @functools.wraps(init)
    def __init__(self: Settings, *args: Any, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in _ROW_NAMES:
                raise UnknownSettingError(unknown_setting(key, "kwarg"))
        init(self, *args, **kwargs)

    return __init__


_ROW_NAMES = frozenset(Settings.names())
#: The rows marked ``secret``: never in a repr, an error message or a log line.
SECRET_SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if not f.repr)
Settings.__init__ = _suggesting_init(Settings.__init__)  # type: ignore[method-assign]


def display_name(key: str, style: str) -> str:
    upper = key.upper()
    if style == "django":
        return f"SEGMENT[{upper!r}]"
    if style == "flask":
        return f"SEGMENT_{upper}"
    if style == "env":
        return ENV_VARS.get(key, f"SEGMENT_{upper}")
    return key
