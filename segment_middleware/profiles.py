"""``request.segment.profile``: the visitor's Segment profile (Unify / Personas) from the
Profile API, within a hard time budget.

``GET {PROFILES_HOST}/v1/spaces/{SPACE_ID}/collections/users/profiles/{type}:{id}/traits``
with the access token as HTTP Basic user name (empty password) answers
``{"traits": {...}, "cursor": {...}}``; ``?class=audience`` limits the traits to the
audiences (booleans: in it or not); 404 ``{"error": {"code": "not_found"}}`` means no
profile. The visitor is ``user_id:<userId>`` when the request has a user, else
``anonymous_id:<anonymousId>``. One page of up to 200 traits is read (``limit=200``, the
API's most).

What a view can rely on:

- ``traits()`` / ``audiences()`` return within PROFILE_TIMEOUT (default 0.2 s), or
  ``None``: the fetch runs on a worker thread and the view waits for it at most that
  long. A fetch that is late still fills the cache when it finishes, so the next request
  of that visitor has the answer at once. ``atraits()`` / ``aaudiences()`` are the same
  for async views: they wait on the event loop, never block it.
- Nothing raises into the view: not configured, a refused token, the API down, a body
  that is not what Segment documents all give ``None``, each reason logged once (until a
  call succeeds again), without the token or the visitor's id (both would be in a URL).
- Answers are kept per process for PROFILE_CACHE_TTL seconds; a profile that does not
  exist is kept as empty (``{}``, ``frozenset()``). Concurrent requests for one visitor
  share one fetch. After a 429, a 5xx or an unreachable API no fetch is tried for
  :data:`BACKOFF` seconds (those calls give ``None`` at once): a site whose Profile API is
  down does not make every request wait out the budget.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .version import __version__

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["Profile"]

log = logging.getLogger("segment_middleware")

BACKOFF = 5.0  # seconds without fetches after the API answered 429/5xx or could not be reached
MAX_BODY = 1024 * 1024  # bytes of one answer read at most: 200 traits fit many times over
MAX_FETCHES = 32  # fetches running at once per client; beyond that a lookup answers None
MAX_CACHED = 10_000  # visitors' answers kept per client (the oldest go first)
TRAITS, AUDIENCES = "traits", "audiences"


class Profile:
    """One visitor's profile, as ``request.segment.profile`` gives it. Cheap to make: nothing
    is fetched until a method is called."""

    __slots__ = ("_client", "_external_id")

    def __init__(self, settings: Settings | None, user_id: str | None, anonymous_id: str | None) -> None:
        self._client = client_for(settings) if settings is not None else None
        if user_id:
            self._external_id: str | None = f"user_id:{user_id}"
        elif anonymous_id:
            self._external_id = f"anonymous_id:{anonymous_id}"
        else:
            self._external_id = None

    def __repr__(self) -> str:  # the visitor's id is personal data: not shown
        return f"<Profile {'of this visitor' if self._external_id else '(no visitor)'}>"

    def traits(self) -> dict[str, Any] | None:
        """The profile's traits (custom and computed, audiences among them), ``{}`` when
        there is no profile, ``None`` when they cannot be had within PROFILE_TIMEOUT."""
        traits = self._lookup(TRAITS)
        return None if traits is None else dict(traits)  # the cache's own dict stays unchanged

    def audiences(self) -> frozenset[str] | None:
        """The audiences the visitor is in now (an audience it left is not in the set),
        ``frozenset()`` when there is no profile, ``None`` as for :meth:`traits`."""
        return self._lookup(AUDIENCES)  # type: ignore[no-any-return]

    async def atraits(self) -> dict[str, Any] | None:
        """:meth:`traits` for async views: waits on the event loop."""
        traits = await self._alookup(TRAITS)
        return None if traits is None else dict(traits)

    async def aaudiences(self) -> frozenset[str] | None:
        """:meth:`audiences` for async views: waits on the event loop."""
        return await self._alookup(AUDIENCES)  # type: ignore[no-any-return]

    def _lookup(self, kind: str) -> Any:
        if self._client is None or self._external_id is None:
            return None
        try:
            return self._client.lookup(kind, self._external_id)
        except Exception as exc:  # our own bug must not become the view's
            self._client.note("failed", "segment: profile lookup failed (%s)", type(exc).__name__)
            return None

    async def _alookup(self, kind: str) -> Any:
        if self._client is None or self._external_id is None:
            return None
        try:
            return await self._client.alookup(kind, self._external_id)
        except Exception as exc:
            self._client.note("failed", "segment: profile lookup failed (%s)", type(exc).__name__)
            return None


class _Failed(Exception):
    """A fetch that gave no answer; ``reason`` keys its log line, ``back_off`` stops fetches
    for a while."""

    def __init__(self, reason: str, text: str, *, back_off: bool) -> None:
        super().__init__(text)
        self.reason = reason
        self.back_off = back_off


class ProfileClient:
    """One space's Profile API for this process: the connection pool, the cache, the
    fetches running. Thread-safe; a forked child makes its own (:func:`client_for`)."""

    def __init__(
        self, host: str, space_id: str | None, token: str | None, timeout: float, ttl: float
    ) -> None:
        self.host = host.rstrip("/")
        self.space_id = space_id
        self.timeout = timeout
        self.ttl = ttl
        self._auth = "Basic " + base64.b64encode(f"{token}:".encode()).decode("ascii") if token else None
        self._lock = threading.Lock()
        self._cache: dict[Hashable, tuple[float, Any]] = {}
        self._fetches: dict[Hashable, concurrent.futures.Future[Any]] = {}
        self._down_until = 0.0
        self._logged: set[str] = set()
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"ProfileClient(host={self.host!r}, token=<{'set' if self._auth else 'unset'}>)"

    # ------------------------------------------------------------------ lookups
    def lookup(self, kind: str, external_id: str) -> Any:
        """The cached answer, else a fetch waited on for at most ``timeout`` seconds."""
        found, future = self._start(kind, external_id)
        if future is None:
            return found
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            return self._late()
        except _Failed:
            return None

    async def alookup(self, kind: str, external_id: str) -> Any:
        found, future = self._start(kind, external_id)
        if future is None:
            return found
        try:
            # shield: the shared fetch goes on (and fills the cache) when this wait times out
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except asyncio.TimeoutError:
            return self._late()
        except _Failed:
            return None

    def _late(self) -> None:
        self.note(
            "late",
            "segment: the Profile API did not answer within PROFILE_TIMEOUT (%.3g s); profile is None "
            "(the answer, when it comes, is cached for the next request)",
            self.timeout,
        )
        return None

    def _start(self, kind: str, external_id: str) -> tuple[Any, concurrent.futures.Future[Any] | None]:
        """(the answer, None) when there is one to give at once (cached, or None when no
        fetch can be made), else (None, the fetch to wait on)."""
        if self._auth is None or self.space_id is None:
            self.note("unset", "segment: profile needs SPACE_ID and PROFILES_TOKEN; profile is None")
            return None, None
        key = (kind, external_id)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1], None
            future = self._fetches.get(key)
            if future is not None:
                return None, future
            if now < self._down_until:
                return None, None
            if len(self._fetches) >= MAX_FETCHES:
                busy = True
            else:
                busy = False
                future = concurrent.futures.Future()
                future.set_running_or_notify_cancel()  # never cancelled: every waiter shares it
                self._fetches[key] = future
        if busy:
            self.note("busy", "segment: %d profile fetches already running; profile is None", MAX_FETCHES)
            return None, None
        assert future is not None
        worker = threading.Thread(
            target=self._fetch, args=(key, kind, external_id, future), name="segment-profile", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # no new threads (interpreter exit): no fetch left waiting
            with self._lock:
                self._fetches.pop(key, None)
            return None, None
        return None, future

    # ------------------------------------------------------------------ the worker
    def _fetch(
        self, key: Hashable, kind: str, external_id: str, future: concurrent.futures.Future[Any]
    ) -> None:
        try:
            answer = self._get(kind, external_id)
        except _Failed as failed:
            with self._lock:
                self._fetches.pop(key, None)
                if failed.back_off:
                    self._down_until = time.monotonic() + BACKOFF
            self.note(failed.reason, "segment: profile is None: %s", str(failed))
            future.set_exception(failed)
            return
        except BaseException as exc:  # a bug of ours: logged, never left hanging
            with self._lock:
                self._fetches.pop(key, None)
            self.note("failed", "segment: profile lookup failed (%s)", type(exc).__name__)
            future.set_exception(_Failed("failed", type(exc).__name__, back_off=False))
            return
        with self._lock:
            self._fetches.pop(key, None)
            if self.ttl > 0:
                if len(self._cache) >= MAX_CACHED:
                    self._evict(time.monotonic())
                self._cache[key] = (time.monotonic() + self.ttl, answer)
            self._logged.clear()  # an answer again: the next failure is worth a line
        future.set_result(answer)

    def _evict(self, now: float) -> None:
        """Expired entries go; if none had, the oldest half (insertion order)."""
        for key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[key]
        if len(self._cache) >= MAX_CACHED:
            for key in list(self._cache)[: MAX_CACHED // 2]:
                del self._cache[key]

    def _get(self, kind: str, external_id: str) -> Any:
        import urllib3

        url = (
            f"{self.host}/v1/spaces/{quote(self.space_id or '', safe='')}/collections/users/profiles/"
            f"{quote(external_id, safe=':')}/traits?limit=200"
        )
        if kind == AUDIENCES:
            url += "&class=audience"
        # The worker may wait longer than a view does: a late answer still fills the cache.
        budget = min(max(4 * self.timeout, 1.0), 10.0)
        try:
            res = self._connections().request(
                "GET",
                url,
                headers={
                    "Authorization": self._auth or "",
                    "Accept": "application/json",
                    "User-Agent": f"segment-middleware/{__version__}",
                },
                timeout=urllib3.Timeout(connect=budget, read=budget),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            try:
                body = res.read(MAX_BODY + 1)
            finally:
                res.release_conn()
        except Exception as exc:  # the URL holds the visitor's id: only the error's type is told
            raise _Failed(
                "unreachable", f"the Profile API could not be reached ({type(exc).__name__})", back_off=True
            ) from None
        status = res.status
        if status == 404:
            return {} if kind == TRAITS else frozenset()
        if status != 200:
            code = _error_code(body)
            back_off = status == 429 or status >= 500
            reason = f"status {status}"
            hint = " (check PROFILES_TOKEN and SPACE_ID)" if status in (401, 403) else ""
            raise _Failed(
                reason, f"the Profile API answered {status} {code}{hint}".rstrip(), back_off=back_off
            )
        if len(body) > MAX_BODY:
            raise _Failed("body", "the Profile API's answer is over 1 MB", back_off=False)
        try:
            traits = json.loads(body).get("traits")
        except (ValueError, AttributeError):
            traits = None
        if not isinstance(traits, dict):
            raise _Failed("body", "the Profile API's answer has no traits object", back_off=False)
        if kind == AUDIENCES:
            return frozenset(name for name, value in traits.items() if value is True)
        return traits

    def _connections(self) -> Any:
        with self._lock:
            if self._pool is None:
                from .http import connection_pool  # urllib3, loaded when a profile is first fetched

                self._pool = connection_pool(self.host)
                self._pool.connection_pool_kw["maxsize"] = MAX_FETCHES  # each running fetch keeps its own
            return self._pool

    # ------------------------------------------------------------------ logging
    def note(self, reason: str, template: str, *args: Any) -> None:
        """Log ``template`` once for ``reason`` until an answer comes again."""
        with self._lock:
            if reason in self._logged:
                return
            self._logged.add(reason)
        log.warning(template, *args)


def _error_code(body: bytes) -> str:
    """Segment's ``{"error": {"code": ...}}``, as a short word (never the message: it may
    quote the request)."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 40 else ""


_clients: dict[tuple[Any, ...], ProfileClient] = {}
_clients_lock = threading.Lock()


def _forget_clients() -> None:
    """In a forked child: the parent's clients are not this process's (their fetch threads
    are gone, a lock may have been held by one of them); the child makes its own."""
    global _clients, _clients_lock
    _clients = {}
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_clients)


def client_for(settings: Settings) -> ProfileClient:
    """The process's client for these settings' space (one per host, space, token, budget
    and TTL: apps with the same settings share the cache)."""
    token = settings.profiles_token
    key = (
        settings.profiles_host,
        settings.space_id,
        hashlib.sha256(token.encode()).hexdigest()
        if token
        else None,  # the token itself is not kept as a key
        settings.profile_timeout,
        settings.profile_cache_ttl,
    )
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = ProfileClient(
                    settings.profiles_host,
                    settings.space_id,
                    token,
                    settings.profile_timeout,
                    settings.profile_cache_ttl,
                )
    return client
