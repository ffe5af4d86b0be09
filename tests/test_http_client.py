"""The sender's HTTP client (``segment_middleware/http.py``, urllib3) against the receiver:
interim answers, redirects, a cookie-setting endpoint, proxies from the environment, TLS
with a CA bundle, and a connection that never crosses a fork. The retry policy itself
(statuses, backoff, Retry-After) is held by ``test_delivery.py`` and
``test_delivery_settings.py``.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
from pathlib import Path

import pytest
import urllib3
from helpers import WRITE_KEY
from segment_receiver import ReceivedRequest, SegmentReceiver

from segment_middleware import lifecycle
from segment_middleware.core import Runtime
from segment_middleware.http import BatchPoster
from segment_middleware.settings import Settings

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
KEY_FORMS = (WRITE_KEY, base64.b64encode(f"{WRITE_KEY}:".encode()).decode())


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA bundle from the machine's environment: each test sets its own."""
    for name in PROXY_VARIABLES + CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def runtime(host: str, store_path: str, **overrides: object) -> Runtime:
    settings: dict[str, object] = {"local_store": store_path, "flush_interval": 60, "max_retries": 0}
    settings.update(write_key=WRITE_KEY, host=host, **overrides)
    return Runtime(Settings.from_sources(settings))


def send(rt: Runtime, *events: str) -> dict[str, int]:
    """Each event in a batch of its own (flushed one by one); the pipeline's stats after."""
    tracker = rt.tracker(user_id="u")
    for event in events:
        tracker.track(event)
        assert rt.delivery.flush(10)
    return rt.delivery.stats()


def posts(receiver: SegmentReceiver) -> list[ReceivedRequest]:
    return [r for r in receiver.requests if r.path == "/v1/batch"]


def assert_no_key(text: str) -> None:
    assert not any(form in text for form in KEY_FORMS), "the write key leaked"


# ---------------------------------------------------------------------- answers
@pytest.mark.parametrize("status", [100, 103])
def test_an_interim_answer_before_the_answer(receiver: SegmentReceiver, store_path: str, status: int) -> None:
    """100 Continue is skipped and the connection kept. Any other 1xx is taken by http.client
    for the final answer: the batch is not counted delivered (it is spooled), and the
    connection, with the real answer still on it, is never used again, so the next batch
    gets its own answer."""
    receiver.interim(status)
    rt = runtime(receiver.url, store_path)
    first = send(rt, "First")
    receiver.interim(None)
    after = send(rt, "Second", "Third")
    receiver.wait_answered()
    seen = posts(receiver)
    if status == 100:
        assert first["delivered"] == 1 and after["delivered"] == 3
        assert [m["event"] for m in receiver.messages] == ["First", "Second", "Third"]
        assert len({r.client_port for r in seen}) == 1, "one kept-alive connection"
    else:
        assert first["delivered"] == 0 and first["spooled"] == 1
        assert after["delivered"] == 2 and after["spooled"] == 1
        assert seen[1].client_port != seen[0].client_port, "a new connection after the interim answer"
        assert seen[2].client_port == seen[1].client_port
    rt.delivery.shutdown(2)


@pytest.mark.parametrize("case", ["307-same-origin", "308-same-origin", "301", "307-other-origin"])
def test_a_redirect(receiver: SegmentReceiver, store_path: str, case: str) -> None:
    """A 307/308 to the same origin is followed with the body and the key (as requests did);
    a 301 (which would turn the batch into a GET) and a redirect to another origin (which
    must not get the key) are not: the batch is spooled, nothing is posted there."""
    status = int(case[:3])
    other = f"http://localhost:{receiver.port}" if case.endswith("other-origin") else ""
    receiver.fail_with(status, times=1, headers={"Location": f"{other}/v1/batch?moved=1"})
    rt = runtime(receiver.url, store_path)
    stats = send(rt, "Moved")
    receiver.wait_answered()
    seen = posts(receiver)
    if case.endswith("same-origin"):
        assert stats["delivered"] == 1 and [m["event"] for m in receiver.messages] == ["Moved"]
        assert [(r.target, r.status, r.auth_ok) for r in seen] == [
            ("/v1/batch", status, True),
            ("/v1/batch?moved=1", 200, True),
        ]
    else:
        assert stats["spooled"] == 1 and stats["delivered"] == 0
        assert [(r.target, r.status) for r in seen] == [("/v1/batch", status)]
    rt.delivery.shutdown(2)


def test_a_cookie_setting_endpoint(receiver: SegmentReceiver, store_path: str) -> None:
    """A load balancer's Set-Cookie changes nothing: every batch goes over the one kept-alive
    connection, and no cookie jar is kept (the Tracking API is stateless)."""
    receiver.answer_headers({"Set-Cookie": "AWSALB=sticky-1; Path=/"})
    rt = runtime(receiver.url, store_path)
    stats = send(rt, "One", "Two", "Three")
    receiver.wait_answered()
    seen = posts(receiver)
    assert stats["delivered"] == 3 and [m["event"] for m in receiver.messages] == ["One", "Two", "Three"]
    assert len({r.client_port for r in seen}) == 1
    assert not any("cookie" in (name.lower() for name in r.headers) for r in seen)
    rt.delivery.shutdown(2)


# ---------------------------------------------------------------------- TLS and proxies
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", None])
def test_tls_with_a_ca_bundle(
    tls_receiver: tuple[SegmentReceiver, Path],
    store_path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str | None,
) -> None:
    """The certificate is verified against REQUESTS_CA_BUNDLE, else SSL_CERT_FILE, else the
    bundle requests ships with, where a self-signed certificate is refused: spooled, and
    neither the log nor the error names the key."""
    receiver, cert = tls_receiver
    if variable is not None:
        monkeypatch.setenv(variable, str(cert))
    rt = runtime(receiver.url, store_path)
    with caplog.at_level(logging.DEBUG):
        stats = send(rt, "Over TLS")
    rt.delivery.shutdown(2)
    if variable is not None:
        assert stats["delivered"] == 1 and [m["event"] for m in receiver.messages] == ["Over TLS"]
        return
    assert stats["spooled"] == 1 and receiver.messages == []
    assert_no_key(caplog.text)
    poster = BatchPoster(
        WRITE_KEY, receiver.url, timeout=5, max_retries=0, gzip=False, abort=threading.Event()
    )
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED") as failure:
        poster.post([b'{"type":"track","event":"E"}'])
    assert_no_key(f"{failure.value!s} {failure.value!r}")


class ConnectProxy:
    """A tiny forward proxy on 127.0.0.1 that only tunnels (CONNECT), recording each
    request head it was sent."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.heads: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.heads.append(head.decode("latin-1"))
            method, target, _ = head.split(b" ", 2)
            if method != b"CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.decode().rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
                _pipe(client, upstream)

    def close(self) -> None:
        self.server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"], ids=["through-the-proxy", "no-proxy-matches"])
def test_a_proxy_from_the_environment(
    tls_receiver: tuple[SegmentReceiver, Path],
    store_path: str,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    """HTTPS_PROXY (with credentials) tunnels the post with CONNECT, the proxy seeing its own
    credentials and never the write key; NO_PROXY naming the endpoint bypasses it."""
    receiver, cert = tls_receiver
    proxy = ConnectProxy()
    try:
        credentialed = proxy.url.replace("http://", "http://proxy-user:proxy%20pw@")
        for name, value in (("HTTPS_PROXY", credentialed), ("NO_PROXY", no_proxy)):
            monkeypatch.setenv(name, value)
            monkeypatch.setenv(name.lower(), value)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        rt = runtime(receiver.url, store_path)
        stats = send(rt, "Proxied", "Again")
        rt.delivery.shutdown(2)
    finally:
        proxy.close()
    assert stats["delivered"] == 2 and [m["event"] for m in receiver.messages] == ["Proxied", "Again"]
    if no_proxy:
        assert proxy.heads == []
        return
    (head,) = proxy.heads  # one tunnel, kept alive for both batches
    assert head.startswith(f"CONNECT 127.0.0.1:{receiver.port} HTTP/1.")
    credentials = base64.b64encode(b"proxy-user:proxy pw").decode()
    assert f"\r\nproxy-authorization: Basic {credentials}\r\n".lower() in head.lower()
    assert_no_key(head)


# ---------------------------------------------------------------------- the origin's pool
def test_a_post_goes_straight_to_the_origins_pool_as_the_manager_would_send_it(
    receiver: SegmentReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a proxy, a post skips the pool manager's lookup (``BatchPoster._urlopen``);
    what arrives is what the manager sends: the same target, headers and body, on the same
    kept-alive connection."""
    poster = BatchPoster(
        WRITE_KEY, receiver.url, timeout=5, max_retries=0, gzip=False, abort=threading.Event()
    )
    batch = [b'{"type":"track","event":"E","userId":"u"}']
    poster.post(batch)  # opens the connection
    manager = poster._connections()
    lookups: list[object] = []
    lookup = manager.connection_from_host
    monkeypatch.setattr(manager, "connection_from_host", lambda *a, **k: lookups.append(a) or lookup(*a, **k))
    poster.post(batch)
    assert lookups == []  # the origin's pool, straight
    body = b'{"batch":[{"type":"track","event":"E","userId":"u"}],"sentAt":"2026-12-07T00:00:00.000Z"}'
    direct = poster._urlopen(poster.url, body, poster.headers)
    managed = manager.urlopen(
        "POST", poster.url, body=body, headers=poster.headers, retries=False, redirect=False, timeout=5
    )
    assert direct.status == managed.status == 200
    assert len(lookups) == 1  # the manager's own way looked its pool up
    receiver.wait_answered()
    *_, by_origin, by_manager = posts(receiver)
    assert by_origin.target == by_manager.target == "/v1/batch"
    assert by_origin.headers == by_manager.headers
    assert by_origin.body == by_manager.body
    assert by_origin.client_port == by_manager.client_port
    poster.close()


# ---------------------------------------------------------------------- fork
def test_a_connection_never_crosses_a_fork(receiver: SegmentReceiver) -> None:
    """A poster used in a forked child opens its own connection; the parent's stays its own."""
    lifecycle.track_forks()  # what the first pipeline installs
    poster = BatchPoster(
        WRITE_KEY, receiver.url, timeout=5, max_retries=0, gzip=False, abort=threading.Event()
    )
    batch = [b'{"type":"track","event":"E","userId":"u"}']
    poster.post(batch)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            poster.post(batch)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    poster.post(batch)
    receiver.wait_answered()
    parent_first, child, parent_again = (r.client_port for r in posts(receiver))
    assert child != parent_first and parent_again == parent_first
    poster.close()
