"""Posting one batch to ``/v1/batch``, with the SDK's session settings, auth and retry policy.

Why not the SDK's own ``post()`` / ``Consumer.request()``: they serialize the whole batch
again although every message is already encoded (the sender needs it for the 32 KB check
and the spool); bench/delivery.py measures the difference. What is the SDK's: its
``requests`` session's effective settings (proxies from the environment, certificates,
netrc; the session itself whenever a proxy, adapter, hook, cookie or redirect is
involved), ``APIError``, ``parse_retry_after``, its retryable-status rules and its backoff
schedule (first retry at once, then 0.5 s doubling up to 60 s, ``MAX_RETRIES`` counted
retries, rate-limited waits uncounted within a 30-minute budget).
"""

from __future__ import annotations

import base64
import gzip as _gzip
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers, select_proxy
from segment.analytics import request as sdk_request
from segment.analytics.request import APIError, parse_retry_after
from segment.analytics.version import VERSION as SDK_VERSION
from urllib3.util.wait import wait_for_read

from .http1 import Answer, read_answer, request_head
from .messages import iso_timestamp
from .version import __version__

__all__ = ["APIError", "BatchPoster", "Interrupted"]

MAX_TOTAL_BACKOFF = 43200.0  # the SDK's DEFAULT_MAX_TOTAL_BACKOFF_DURATION
MAX_RATE_LIMIT = 1800.0  # the SDK's DEFAULT_MAX_RATE_LIMIT_DURATION


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


def _api_error(res: Any) -> APIError:
    if 300 <= res.status_code < 400:
        return APIError(res.status_code, "redirect", res.reason, res)
    try:
        payload = res.json()
        return APIError(res.status_code, payload["code"], payload["message"], res)
    except (ValueError, KeyError, TypeError):
        return APIError(res.status_code, "unknown", res.text[:200], res)


class BatchPoster:
    """Posts pre-serialized messages; raises APIError or a network error once retries
    are spent, :class:`Interrupted` when ``abort`` is set during a wait."""

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
        self.url = host.rstrip("/") + "/v1/batch"
        self.timeout = timeout
        self.max_retries = max_retries
        self.gzip = gzip
        self.abort = abort
        self.on_retry = on_retry
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"analytics-python/{SDK_VERSION} segment-middleware/{__version__}",
            "Authorization": f"Basic {token}",
        }
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self._template: _Template | None = None

    def _send(self, body: bytes, retry: int) -> Any:
        """One POST with the SDK session's settings: None when the endpoint accepted the
        batch (2xx), else its answer as a ``requests.Response``.

        ``Session.post`` re-reads the environment (proxies, CA bundle, netrc) and re-merges
        headers on every call, holding the GIL that the app's requests need. So the
        session's effective settings are worked out once per session (the same
        ``prepare_request`` / ``merge_environment_settings`` calls ``post`` makes) and, in the
        common case, the batch goes over one kept-alive connection (``_Direct``).
        The session is used as before whenever anything would make the two differ: a proxy
        for the endpoint, a custom adapter or hooks, cookies set by the endpoint, a redirect.
        """
        session = sdk_request._session
        template = self._template
        if template is None or template.session is not session or template.config != _config(session):
            template = self._template = self._prepare_template(session)
        direct = template.direct
        if direct is not None and not session.cookies:
            answer = direct.post(body, retry, self.timeout)
            if 200 <= answer.status < 300:
                return None
            if not 300 <= answer.status < 400:
                return _response(self.url, answer)
            # A redirect: let requests follow it, as it always did.
        if session.cookies:
            headers = self.headers if not retry else {**self.headers, "X-Retry-Count": str(retry)}
            res = session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        else:
            post = template.prepared.copy()
            post.body = body
            post.headers["Content-Length"] = str(len(body))
            if retry:
                post.headers["X-Retry-Count"] = str(retry)
            res = session.send(post, timeout=self.timeout, allow_redirects=True, **template.settings)
        return None if 200 <= res.status_code < 300 else res

    def _prepare_template(self, session: Any) -> _Template:
        if self._template is not None and self._template.direct is not None:
            self._template.direct.close()
        request = requests.Request("POST", self.url, headers=self.headers, data=b"{}")
        prepared = session.prepare_request(request)
        settings = session.merge_environment_settings(prepared.url, {}, None, None, None)
        direct = None
        try:
            if (
                select_proxy(prepared.url, settings["proxies"]) is None
                and type(session.get_adapter(prepared.url)) is requests.adapters.HTTPAdapter
                and not any(session.hooks.values())
                and not any(prepared.hooks.values())
            ):
                headers = {k: v for k, v in prepared.headers.items() if k.lower() not in _HOP_HEADERS}
                direct = _Direct(prepared.url, headers, settings["verify"], settings["cert"])
        except Exception:  # anything unusual: the session does it all, as before
            direct = None
        return _Template(session, _config(session), prepared, settings, direct)

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
                if not retryable(res.status_code):
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


class _Template(NamedTuple):
    """What one session's ``post`` would do, worked out once: valid while the session is
    the SDK's and its configuration (``config``) has not changed since."""

    session: Any
    config: tuple[Any, ...]
    prepared: Any  # the prepared request, copied per post
    settings: dict[str, Any]  # merge_environment_settings: proxies, verify, cert, stream
    direct: _Direct | None  # None: every post goes through the session


def _config(session: Any) -> tuple[Any, ...]:
    """What a user may change on a live session that changes how it posts: hooks,
    adapters, proxies, certificates. Compared before each batch (not each message)."""
    return (
        tuple((name, tuple(hooks)) for name, hooks in session.hooks.items()),
        tuple((prefix, id(adapter)) for prefix, adapter in session.adapters.items()),
        tuple(sorted(session.proxies.items())),
        session.verify,
        session.cert,
        session.trust_env,
    )


# Headers http1.request_head writes itself, or that would make the endpoint answer in a form
# we would have to decode (requests advertises gzip and decodes; the answer is a few bytes).
_HOP_HEADERS = frozenset(("content-length", "accept-encoding", "connection", "host", "transfer-encoding"))


class _Direct:
    """One kept-alive connection to the endpoint (no proxy), TLS verified with the
    session's effective ``verify``/``cert`` (by default requests' CA bundle). The exchange
    itself is http1.py's."""

    def __init__(self, url: str, headers: dict[str, str], verify: Any, cert: Any) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL for a direct connection: {parts.scheme}")
        https = parts.scheme == "https"
        default_port = 443 if https else 80
        self.hostname = parts.hostname
        self.port = parts.port or default_port
        # The Host header as http.client writes it: IDNA, the port only when not the default.
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname.encode("idna").decode("ascii")
        self.host = host if self.port == default_port else f"{host}:{self.port}"
        self.target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.headers = headers
        self.context: ssl.SSLContext | None = _ssl_context(verify, cert) if https else None
        self.sock: socket.socket | None = None

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.hostname, self.port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 does
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def post(self, body: bytes, retry: int, timeout: float) -> Answer:
        sock = self.sock
        if sock is not None and wait_for_read(sock, timeout=0.0):
            # Closed by the server while idle (what urllib3's pool checks before reuse).
            self.close()
            sock = None
        if sock is None:
            sock = self.sock = self._connect(timeout)
        else:
            sock.settimeout(timeout)
        headers = self.headers if not retry else {**self.headers, "X-Retry-Count": str(retry)}
        try:
            sock.sendall(request_head(self.target, self.host, headers, len(body)) + body)
            answer = read_answer(sock)
        except BaseException:
            self.close()
            raise
        if not answer.keep_alive:
            self.close()
        return answer


def _ssl_context(verify: Any, cert: Any) -> ssl.SSLContext:
    """What requests/urllib3 would verify with: its CA bundle (or the one named by
    REQUESTS_CA_BUNDLE / the session), or nothing when verify is False."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str) and os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        bundle = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        context = ssl.create_default_context(cafile=bundle)
    if cert:
        if isinstance(cert, (tuple, list)):
            context.load_cert_chain(cert[0], cert[1])
        else:
            context.load_cert_chain(cert)
    return context


def _response(url: str, answer: Answer) -> Any:
    """A ``requests.Response`` for what the direct connection got (APIError carries it)."""
    res = requests.Response()
    res.status_code = answer.status
    res.reason = answer.reason
    res.headers = CaseInsensitiveDict(answer.headers)
    res._content = answer.body
    res.encoding = get_encoding_from_headers(res.headers)
    res.url = url
    return res
