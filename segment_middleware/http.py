"""Posting one batch to ``/v1/batch``: urllib3 for the connection, the SDK for the policy.

Why not the SDK's own ``post()`` / ``Consumer.request()``: they serialize the whole batch
again although every message is already encoded (the sender needs it for the 32 KB check
and the spool). What is the SDK's: ``APIError``, ``parse_retry_after``, its
retryable-status rules and its backoff schedule (first retry at once, then 0.5 s doubling
up to 60 s, ``MAX_RETRIES`` counted retries, rate-limited waits uncounted within a
30-minute budget). What is urllib3's: one kept-alive connection per poster (so per sender
thread), TLS verified, the proxy the environment names. urllib3's own retries and
redirects are off, so every retry, and every wait before one, follows the SDK's policy
here and can be cut short by shutdown.
"""

from __future__ import annotations

import base64
import gzip as _gzip
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_auth_from_url,
    get_environ_proxies,
    prepend_scheme_if_needed,
    select_proxy,
)
from segment.analytics.request import APIError, parse_retry_after
from segment.analytics.version import VERSION as SDK_VERSION

from . import lifecycle
from .messages import iso_timestamp
from .version import __version__

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

__all__ = ["APIError", "BatchPoster", "Interrupted", "backoff_delay", "connection_pool", "retryable"]

MAX_TOTAL_BACKOFF = 43200.0  # the SDK's DEFAULT_MAX_TOTAL_BACKOFF_DURATION
MAX_RATE_LIMIT = 1800.0  # the SDK's DEFAULT_MAX_RATE_LIMIT_DURATION
MAX_REDIRECTS = 30  # requests' DEFAULT_REDIRECT_LIMIT


class Interrupted(Exception):
    """A retry wait was cut short (shutdown); the batch was not sent."""


def retryable(status: int) -> bool:
    """The SDK's rule: 408, 410, 429, 460 and 5xx except 501, 505 (and 511 without OAuth)."""
    if 400 <= status < 500:
        return status in (408, 410, 429, 460)
    return 500 <= status < 600 and status not in (501, 505, 511)


def backoff_delay(attempt: int) -> float:
    """The SDK's schedule: the first retry at once, then 0.5 s, 1 s, 2 s ... up to 60 s."""
    if attempt == 1:
        return 0.0
    base = 0.5 * (2 ** (attempt - 2))
    return float(min(base + random.uniform(0, 0.1 * base), 60.0))


def _api_error(res: BaseHTTPResponse) -> APIError:
    """The SDK's reading of a refusal: Segment's ``{"code", "message"}`` body when there is one."""
    if 300 <= res.status < 400:
        return APIError(res.status, "redirect", res.reason or "redirect not followed", res)
    try:
        payload = json.loads(res.data)
        return APIError(res.status, payload["code"], payload["message"], res)
    except (ValueError, KeyError, TypeError):
        return APIError(res.status, "unknown", res.data[:200].decode("utf-8", "replace"), res)


def _ca_location() -> dict[str, str]:
    """Where the endpoint's certificate is checked: requests' choice (REQUESTS_CA_BUNDLE,
    else CURL_CA_BUNDLE), else OpenSSL's variables (SSL_CERT_FILE, SSL_CERT_DIR), else the
    bundle requests ships with (certifi), which is what the SDK's session verified with."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(name)
        if path:
            return {"ca_cert_dir": path} if os.path.isdir(path) else {"ca_certs": path}
    directory = os.environ.get("SSL_CERT_DIR")
    if directory:
        return {"ca_cert_dir": directory}
    return {"ca_certs": DEFAULT_CA_BUNDLE_PATH}


def connection_pool(url: str) -> urllib3.PoolManager:
    """One kept-alive connection to ``url``'s origin, through the proxy the environment
    names for it (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, unless NO_PROXY matches, read as
    requests reads them), TLS verified. The environment is read here, once per pool."""
    options: dict[str, Any] = {"num_pools": 2, "maxsize": 1, "cert_reqs": "CERT_REQUIRED", **_ca_location()}
    proxy = select_proxy(url, get_environ_proxies(url))
    if not proxy:
        return urllib3.PoolManager(**options)
    proxy = prepend_scheme_if_needed(proxy, "http")
    if proxy.lower().startswith("socks"):  # needs PySocks, as it does for requests
        from urllib3.contrib.socks import SOCKSProxyManager

        return SOCKSProxyManager(proxy, **options)
    user, password = get_auth_from_url(proxy)
    headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)


def _same_origin(url: str, location: str) -> bool:
    """A redirect that may carry the write key: the same host and port, or the same host
    upgraded from http to https (what requests keeps the Authorization header for)."""
    a, b = urlsplit(url), urlsplit(location)
    if a.hostname != b.hostname:
        return False
    if a.scheme == b.scheme:
        return a.port == b.port
    return a.scheme == "http" and b.scheme == "https" and a.port in (None, 80) and b.port in (None, 443)


class BatchPoster:
    """Posts pre-serialized messages; raises APIError or a network error once retries
    are spent, :class:`Interrupted` when ``abort`` is set during a wait.

    Not thread-safe: one poster per sender thread, each with its own connection.
    """

    def __init__(
        self,
        write_key: str,
        host: str,
        *,
        timeout: float,
        max_retries: int,
        gzip: bool,
        abort: threading.Event,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        parts = urlsplit(host.rstrip("/") + "/v1/batch")
        # Credentials in HOST (a proxy in front of Segment) are the Basic auth, as requests
        # makes them; they never stay in the URL, which error texts may quote.
        user, password = get_auth_from_url(parts.geturl())
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.timeout = timeout  # lowered by the sender at shutdown
        self.max_retries = max_retries
        self.gzip = gzip
        self.abort = abort
        self.on_retry = on_retry
        credentials = f"{user}:{password}" if user else f"{write_key}:"
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"analytics-python/{SDK_VERSION} segment-middleware/{__version__}",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        }
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self._pool: urllib3.PoolManager | None = None
        self._origin: urllib3.HTTPConnectionPool | None = None  # see _urlopen
        self._target = urllib3.util.parse_url(self.url).request_uri
        self._generation = lifecycle.generation

    def close(self) -> None:
        """Close the kept-alive connection (a new one opens on the next post)."""
        pool, self._pool, self._origin = self._pool, None, None
        if pool is not None:
            pool.clear()

    def _connections(self) -> urllib3.PoolManager:
        if self._generation != lifecycle.generation:
            # Forked: the inherited sockets are the parent's. Dropped, not closed, so the
            # parent's connection is left as it was.
            self._pool, self._origin, self._generation = None, None, lifecycle.generation
        if self._pool is None:
            self._pool = connection_pool(self.url)
            if type(self._pool) is urllib3.PoolManager:  # no proxy between: see _urlopen
                self._origin = self._pool.connection_from_url(self.url)
        return self._pool

    def _urlopen(self, url: str, body: bytes, headers: dict[str, str]) -> BaseHTTPResponse:
        """One request, urllib3's retries and redirects off.

        To ``url`` itself with no proxy in between: straight to its origin's connection
        pool, which the manager would find again on every post (parsing the URL, building
        the pool's key; what that costs: bench/README.md). The pool is the manager's own,
        so it holds the one kept-alive connection either way; the manager keeps two pools,
        as many origins as a post may reach (the endpoint, and its https form after a
        redirect), so it never closes this one under us. Elsewhere (a redirect's target)
        and through a proxy, whose headers and URL form the manager adds: by the manager.
        A test holds the two ways to the same request."""
        manager = self._connections()
        origin = self._origin
        options: dict[str, Any] = {"body": body, "headers": headers, "timeout": self.timeout}
        if origin is not None and url == self.url:
            return origin.urlopen("POST", self._target, retries=False, redirect=False, **options)
        return manager.urlopen("POST", url, retries=False, redirect=False, **options)

    def _send(self, body: bytes, retry: int) -> BaseHTTPResponse | None:
        """One POST: None when the endpoint accepted the batch (2xx), else its answer.

        A 307/308 to the same origin is followed, body and key included, as requests
        followed it; any other redirect is the answer (an ``APIError`` "redirect": a 301,
        302 or 303 would turn the batch into a GET, and another origin must not get the key).
        """
        headers = self.headers if not retry else {**self.headers, "X-Retry-Count": str(retry)}
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            res = self._urlopen(url, body, headers)
            if 200 <= res.status < 300:
                return None
            if 100 <= res.status < 200:
                # An interim answer other than 100 Continue, which http.client takes for the
                # final one: the real answer is still on its way, so the connection cannot
                # carry another request.
                self.close()
            location = res.headers.get("Location")
            if res.status not in (307, 308) or not location:
                return res
            target = urljoin(url, location)
            if not _same_origin(url, target):
                return res
            url = target
        return res

    def _wait(self, seconds: float) -> None:
        self.on_retry()
        if self.abort.wait(max(0.0, seconds)):
            raise Interrupted

    def post(self, messages: Sequence[bytes]) -> None:
        """Post encoded messages as one batch."""
        # The (up to 475 KB) body is written once: one join, the batch's head and tail glued
        # to its first and last message.
        head, tail = b'{"batch":[', b'],"sentAt":"' + iso_timestamp(time.time()).encode() + b'"}'
        if len(messages) == 1:
            body = head + messages[0] + tail
        else:
            body = b",".join([head + messages[0], *messages[1:-1], messages[-1] + tail])
        if self.gzip:
            # Level 1: a few percent larger than the default 9 on batch JSON, for a fraction
            # of its CPU (bench/README.md).
            body = _gzip.compress(body, compresslevel=1)
        attempts = backoffs = 0
        first_failure: float | None = None
        rate_limited_since: float | None = None
        while True:
            attempts += 1
            error: Exception
            try:
                res = self._send(body, attempts - 1)
            except Exception as exc:  # refused, reset, timed out: a counted retry
                error = exc
            else:
                if res is None:  # accepted
                    return
                error = _api_error(res)
                if not retryable(res.status):
                    raise error
                delay = parse_retry_after(res)
                if delay:  # rate limited: wait as asked, uncounted, within the budget
                    now = time.monotonic()
                    rate_limited_since = rate_limited_since or now
                    if now - rate_limited_since + delay > MAX_RATE_LIMIT:
                        raise error
                    self._wait(delay)
                    continue
            now = time.monotonic()
            first_failure = first_failure or now
            backoffs += 1
            if backoffs > self.max_retries or now - first_failure >= MAX_TOTAL_BACKOFF:
                raise error
            self._wait(backoff_delay(backoffs))
