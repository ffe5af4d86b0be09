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
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .plan import Plan

__all__ = ["Problem", "Settings", "SettingsError", "UnknownSettingError", "load_callable", "problems"]

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


def _flush_at(value: Any, name: str) -> int:
    number = _number(int, 1)(value, name)
    if number > 100:
        raise SettingsError(f"{name}: Segment takes at most 100 messages per batch here, got {value!r}")
    return int(number)


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
    README's settings table lists every row (a test holds it to this)."""
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

    write_key: str | None = _setting("E001", _write_key, None, secret=True)
    host: str = _setting("E002", _host, "https://api.segment.io")
    exclude_paths: tuple[str, ...] = _setting("E003", _paths, ("/health", "/favicon.ico"))
    page_methods: tuple[str, ...] | None = _setting("E004", _methods, None)
    anonymous_id_cookie: str = _setting("E005", _token(_COOKIE_NAME, "cookie name"), "ajs_anonymous_id")
    anonymous_id_header: str = _setting("E006", _token(_HEADER_NAME, "header name"), "X-Anonymous-Id")
    set_cookie: bool = _setting("E007", _bool, True)
    cookie_domain: str | None = _setting("E008", _optional_str, None)
    cookie_max_age: int = _setting("E009", _number(int, 0), 365 * 24 * 3600)
    user_id: Callable[[Any], str | None] | None = _setting("E010", _callable, None)
    should_track: Callable[[Any], bool] | None = _setting("E011", _callable, None)
    include_query_params: bool = _setting("E012", _bool, False)
    redact_query_params: tuple[str, ...] = _setting("E013", _redact, DEFAULT_REDACT)
    trusted_proxies: tuple[str, ...] = _setting("E014", _proxies, ())
    anonymize_ip: bool = _setting("E015", _bool, False)
    honor_gpc: bool = _setting("E016", _bool, True)
    honor_dnt: bool = _setting("E017", _bool, False)
    consent: Callable[[Any], Mapping[str, bool]] | None = _setting("E018", _callable, None)
    identify_traits: Callable[[Any], Mapping[str, Any]] | None = _setting("E019", _callable, None)
    tracking_plan: str | None = _setting("E020", _tracking_plan, None)
    plan_violations: str = _setting("E021", _plan_violations, "warn")
    before_send: tuple[Callable[[dict[str, Any]], dict[str, Any] | None], ...] = _setting(
        "E022", _callables, ()
    )
    integrations: Mapping[str, Any] = _setting("E023", _integrations, factory=dict)
    flush_at: int = _setting("E024", _flush_at, 100)
    flush_interval: float = _setting("E025", _number(float, 0, inclusive=False), 0.5)
    max_queue_size: int = _setting("E026", _number(int, 1), 10000)
    max_retries: int = _setting("E027", _number(int, 0), 10)
    timeout: float = _setting("E028", _number(float, 0, inclusive=False), 15.0)
    gzip: bool = _setting("E029", _bool, False)
    shutdown_timeout: float = _setting("E030", _number(float, 0), 5.0)
    spool: bool = _setting("E031", _bool, True)
    auto_replay: bool = _setting("E032", _bool, False)
    local_store: str = _setting(
        "E033", _token(re.compile(r"^[^\x00]+$"), "file path"), ".segment/events.sqlite3"
    )
    cdn_url: str = _setting("E034", _host, "https://cdn.segment.com")
    default_currency: str | None = _setting("E035", _currency, None)
    reset_on_logout: bool = _setting("E036", _bool, True)
    auth_events: bool = _setting("E037", _bool, False)
    alias_on_signup: bool = _setting("E038", _bool, False)
    max_in_flight: int = _setting("E039", _number(int, 1, high=16), 3)
    spool_max_mb: float = _setting("E040", _number(float, 0, inclusive=False), 512.0)
    track_unmatched_routes: bool = _setting("E041", _bool, False)

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
    key_text = values.get("write_key")
    out: dict[str, Any] = {}
    found = [Problem(UNKNOWN_ID, unknown_setting(key, style)) for key in values if key not in rows]
    for key, value in values.items():
        row = rows.get(key)
        if row is None:
            continue
        try:
            out[key] = row.metadata["check"](value, display_name(key, style))
        except SettingsError as exc:
            message = str(exc)
            if isinstance(key_text, str) and len(key_text) >= 4:  # a key pasted into the wrong setting
                message = message.replace(key_text, "<the write key>")
            found.append(Problem(row.metadata["id"], message))
    return out, found


def problems(
    explicit: Mapping[str, Any] | None = None,
    framework: Mapping[str, Any] | None = None,
    *,
    style: str = "kwarg",
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every invalid setting in these sources, each with its stable id (Django's checks)."""
    return check_values(merge_sources(explicit, framework, environ), style)[1]


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
