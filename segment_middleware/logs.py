"""Log lines that stay few and never carry secrets, whatever happens to delivery.

An outage of an hour must log a few dozen lines, not one per batch; the SDK's own logger
must never print a request body (personal data, the write key).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .settings import advice

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["Burst", "announce", "destination", "hide_in_logs", "sdk_log_filter", "secret_filter"]

log = logging.getLogger("segment_middleware")

DROP_LOG_WINDOW = 10.0  # seconds: events within one window are logged once, with the count


class SdkLogFilter(logging.Filter):
    """The SDK logs whole request bodies at DEBUG (``making request: {... "writeKey": ...}``):
    personal data and the write key. Drop those records; scrub known keys from the rest."""

    def __init__(self) -> None:
        super().__init__("segment")
        self.secrets: set[str] = set()
        self._last_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if record.levelno <= logging.DEBUG and text.startswith(("making request", "received response")):
            return False
        if record.levelno >= logging.WARNING:
            # The SDK logs every failed batch; ours says it once per burst with the count.
            key, now = text[:24], time.monotonic()
            if now - self._last_seen.get(key, -DROP_LOG_WINDOW) < DROP_LOG_WINDOW:
                return False
            self._last_seen[key] = now
        if self.secrets:
            text = record.getMessage()
            if any(secret in text for secret in self.secrets):
                for secret in self.secrets:
                    text = text.replace(secret, "[WRITE_KEY]")
                record.msg, record.args = text, None
        return True


sdk_log_filter = SdkLogFilter()


class SecretFilter(logging.Filter):
    """The package's own logger: any secret of a running configuration (the write keys,
    the API tokens, the source secrets, and the write key as the Basic auth it is sent
    as) is replaced by its name in every record, its traceback included. Our lines never
    format a secret themselves; this catches the text they quote: an endpoint's error
    message that echoes the key, an exception from a user's hook."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}  # text -> what is shown instead

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            record.msg, record.args = self.hide(text), None
        if record.exc_info and record.exc_info[1] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            if any(secret in trace for secret in self.secrets):
                record.exc_text, record.exc_info = self.hide(trace), None
        return True

    def hide(self, text: str) -> str:
        for secret, shown in self.secrets.items():
            text = text.replace(secret, shown)
        return text


secret_filter = SecretFilter()
log.addFilter(secret_filter)


def hide_in_logs(settings: Settings) -> None:
    """Register these settings' secrets with the log filters (the package's logger and the
    SDK's), once a runtime is built with them."""
    from .settings import SECRET_SETTINGS, secret_texts

    found = secret_texts({name: getattr(settings, name) for name in SECRET_SETTINGS})
    if not found:
        return
    # New containers, swapped in whole: a filter may be iterating the old ones on another
    # thread. Longest first, so that a secret containing another is replaced whole.
    secrets = dict(secret_filter.secrets)
    for text, shown in found:
        secrets[text] = shown
        secrets[base64.b64encode(f"{text}:".encode()).decode()] = f"{shown} (Basic auth)"
    secret_filter.secrets = dict(sorted(secrets.items(), key=lambda item: -len(item[0])))
    sdk_log_filter.secrets = sdk_log_filter.secrets | {text for text, _ in found}


class Burst:
    """One log line for the first event of a burst, then at most one summary per window,
    so an outage of an hour logs a few dozen lines, not one per batch."""

    def __init__(self, level: int, template: str) -> None:
        self.level = level
        self.template = template
        self._lock = threading.Lock()
        self._unlogged = 0
        self._args: tuple[Any, ...] = ()
        self._last = -DROP_LOG_WINDOW

    def note(self, n: int, *args: Any) -> None:
        with self._lock:
            self._unlogged += n
            self._args = args
        self.tick()

    def tick(self, *, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._unlogged or (not force and now - self._last < DROP_LOG_WINDOW):
                return
            count, args, self._unlogged, self._last = self._unlogged, self._args, 0, now
        log.log(self.level, self.template, count, *args)


# ---------------------------------------------------------------------- where events go
_announced: set[tuple[int, str]] = set()


def destination(settings: Settings) -> str:
    """Where this runtime's events go, for people: the endpoint (without any credentials in
    its URL), or the local store's absolute path."""
    if settings.uses_store:
        return f"no write key: events go to the local store {os.path.abspath(settings.local_store)}"
    parts = urlsplit(settings.host)
    host = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")) if parts.hostname else "?"
    if parts.port:
        host = host.replace(parts.hostname or "", f"{parts.hostname}:{parts.port}", 1)
    return f"events go to {host}"


def announce(settings: Settings) -> None:
    """One INFO line per process and destination, when its first runtime for it is built:
    nobody should have to guess whether events are being sent or kept on disk."""
    where = destination(settings)
    key = (os.getpid(), where)
    if key not in _announced:
        _announced.add(key)
        log.info("segment: %s (pid %d, logger %r)", where, os.getpid(), log.name)
        for problem in advice(settings):
            log.warning("segment: %s (%s)", problem.message, problem.id)
