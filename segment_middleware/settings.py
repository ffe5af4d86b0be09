"""One validated settings object for every adapter.

Settings are read once, when an adapter starts, and frozen: the request path never looks
anything up again. Each framework names the same setting differently (Django
``SEGMENT["FLUSH_AT"]``, Flask ``SEGMENT_FLUSH_AT``, ASGI ``flush_at``), so errors name the
setting the way the user wrote it.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Settings", "SettingsError", "load_callable"]

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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable, with the SDK's defaults for delivery.

    Build it with :meth:`from_sources` (adapters do) or directly with keyword arguments.
    """

    write_key: str | None = dataclasses.field(default=None, repr=False)
    host: str = "https://api.segment.io"
    exclude_paths: tuple[str, ...] = ("/health", "/favicon.ico")
    page_methods: tuple[str, ...] | None = None
    anonymous_id_cookie: str = "ajs_anonymous_id"
    anonymous_id_header: str = "X-Anonymous-Id"
    set_cookie: bool = True
    cookie_domain: str | None = None
    cookie_max_age: int = 365 * 24 * 3600
    user_id: Callable[[Any], str | None] | None = None
    should_track: Callable[[Any], bool] | None = None
    include_query_params: bool = False
    redact_query_params: tuple[str, ...] = DEFAULT_REDACT
    trusted_proxies: tuple[str, ...] = ()
    anonymize_ip: bool = False
    honor_gpc: bool = True
    honor_dnt: bool = False
    consent: Callable[[Any], Mapping[str, bool]] | None = None
    identify_traits: Callable[[Any], Mapping[str, Any]] | None = None
    tracking_plan: str | None = None
    plan_violations: str = "warn"
    before_send: tuple[Callable[[dict[str, Any]], dict[str, Any] | None], ...] = ()
    integrations: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    flush_at: int = 100
    flush_interval: float = 0.5
    max_queue_size: int = 10000
    max_retries: int = 10
    timeout: float = 15.0
    gzip: bool = False
    shutdown_timeout: float = 5.0
    spool: bool = True
    auto_replay: bool = False
    local_store: str = ".segment/events.sqlite3"
    cdn_url: str = "https://cdn.segment.com"

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
        spelling); ``style`` only changes how errors name a setting.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, var in ENV_VARS.items():
            raw = env.get(var)
            if raw is not None and raw != "":
                values[field] = _split_list(raw) if field in ("exclude_paths", "trusted_proxies") else raw
        for source in (framework or {}), (explicit or {}):
            for key, value in source.items():
                values[key] = value
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise SettingsError(f"{display_name(unknown[0], style)}: unknown setting")
        return cls._validated(values, style)

    @classmethod
    def _validated(cls, values: dict[str, Any], style: str) -> Settings:
        out: dict[str, Any] = {}
        for key, value in values.items():
            check = _CHECKS.get(key)
            name = display_name(key, style)
            try:
                out[key] = check(value, name) if check else value
            except SettingsError as exc:  # a key pasted into the wrong setting stays secret
                key_text = values.get("write_key")
                if isinstance(key_text, str) and len(key_text) >= 4 and key_text in str(exc):
                    raise SettingsError(str(exc).replace(key_text, "<the write key>")) from None
                raise
        return cls(**out)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated like the rest."""
        merged = {f: getattr(self, f) for f in self.names()}
        merged.update(changes)
        return type(self)._validated(merged, "kwarg")

    # ---------------------------------------------------------------- derived facts
    @property
    def uses_store(self) -> bool:
        """No write key: messages go to the embedded store instead of the network."""
        return not self.write_key

    def __repr__(self) -> str:  # pragma: no cover - trivial, but must never leak the key
        key = "set" if self.write_key else "unset"
        return f"Settings(write_key=<{key}>, host={self.host!r}, local_store={self.local_store!r})"


def display_name(key: str, style: str) -> str:
    upper = key.upper()
    if style == "django":
        return f"SEGMENT[{upper!r}]"
    if style == "flask":
        return f"SEGMENT_{upper}"
    if style == "env":
        return ENV_VARS.get(key, f"SEGMENT_{upper}")
    return key


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


def _number(kind: type, low: float, *, inclusive: bool = True) -> Callable[[Any, str], Any]:
    def check(value: Any, name: str) -> Any:
        bound = f"{'>=' if inclusive else '>'} {low}"
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
        if not (number >= low if inclusive else number > low):
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


def _not_yet(what: str, default: Any) -> Callable[[Any, str], Any]:
    """A setting the contract names whose feature this version does not have: anything but
    its default is refused, so that nobody believes it is in force."""

    def check(value: Any, name: str) -> Any:
        if value == default:
            return value
        raise SettingsError(f"{name}: {what} are not available in this version; remove the setting")

    return check


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{name}: must be a dict, got {type(value).__name__}")
    return dict(value)


def _redact(value: Any, name: str) -> tuple[str, ...]:
    return tuple(item.lower() for item in _str_list(value, name))


def _flush_at(value: Any, name: str) -> int:
    number = _number(int, 1)(value, name)
    if number > 100:
        raise SettingsError(f"{name}: Segment takes at most 100 messages per batch here, got {value!r}")
    return int(number)


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "write_key": _write_key,
    "host": _host,
    "cdn_url": _host,
    "exclude_paths": _paths,
    "page_methods": _methods,
    "anonymous_id_cookie": _token(_COOKIE_NAME, "cookie name"),
    "anonymous_id_header": _token(_HEADER_NAME, "header name"),
    "set_cookie": _bool,
    "cookie_domain": _optional_str,
    "cookie_max_age": _number(int, 0),
    "user_id": _callable,
    "should_track": _callable,
    "include_query_params": _bool,
    "redact_query_params": _redact,
    "trusted_proxies": _proxies,
    "anonymize_ip": _bool,
    "honor_gpc": _bool,
    "honor_dnt": _bool,
    "consent": _callable,
    "identify_traits": _callable,
    "tracking_plan": _not_yet("tracking plans", None),
    "plan_violations": _not_yet("tracking plans", "warn"),
    "before_send": _callables,
    "integrations": _mapping,
    "flush_at": _flush_at,
    "flush_interval": _number(float, 0, inclusive=False),
    "max_queue_size": _number(int, 1),
    "max_retries": _number(int, 0),
    "timeout": _number(float, 0, inclusive=False),
    "gzip": _bool,
    "shutdown_timeout": _number(float, 0),
    "spool": _bool,
    "auto_replay": _bool,
    "local_store": _token(re.compile(r"^[^\x00]+$"), "file path"),
}
