"""The sender's HTTP/1.1 answer reader (``segment_middleware/http1.py``) against the
standard library's: for the same bytes, ``read_answer`` must see what ``http.client`` sees
(status, reason, headers, body, whether the connection stays open), whatever the chunking
of the body and however the bytes are split across reads. Where http.client raises, the
reader raises BadAnswer (which the sender retries like a dropped connection)."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_middleware.http1 import MAX_ANSWER_BYTES, BadAnswer, read_answer, request_head


class Pieces:
    """A socket whose ``recv`` hands out ``data`` in the given pieces, then b"" (closed)."""

    def __init__(self, data: bytes, sizes: list[int] | None = None) -> None:
        self.pieces: list[bytes] = []
        sizes = list(sizes or [])
        while data:
            size = max(1, sizes.pop(0)) if sizes else len(data)
            self.pieces.append(data[:size])
            data = data[size:]

    def recv(self, limit: int) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > limit:
            piece, rest = piece[:limit], piece[limit:]
            self.pieces.insert(0, rest)
        return piece


def stdlib(data: bytes) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
    """What http.client reads from ``data`` (sent over a real socket, then closed)."""
    ours, theirs = socket.socketpair()
    writer = threading.Thread(target=lambda: (theirs.sendall(data), theirs.shutdown(socket.SHUT_WR)))
    writer.start()
    try:
        res = http.client.HTTPResponse(ours, method="POST")
        res.begin()
        body = res.read()
        return res.status, res.reason, res.getheaders(), body, not res.will_close
    finally:
        writer.join()
        ours.close()
        theirs.close()


def ours(data: bytes, sizes: list[int] | None = None) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
    answer = read_answer(Pieces(data, sizes))  # type: ignore[arg-type]
    return answer.status, answer.reason, answer.headers, answer.body, answer.keep_alive


ANSWERS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"success":true}',
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "close": b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
    "until-close": b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n<html>down</html>",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
    "100 continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "no content": b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    "rate limited": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nread to the end",
    "spaces": b"HTTP/1.1 400   Bad  Request \r\nX-A:   padded   \r\nContent-Length: 3\r\n\r\nbad",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_reads_what_http_client_reads(name: str) -> None:
    data = ANSWERS[name]
    assert ours(data) == stdlib(data)
    assert ours(data, [1] * len(data)) == stdlib(data)  # one byte per read


BROKEN = {
    "not http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "bad status": b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n",
    "status out of range": b"HTTP/1.1 99 Low\r\nContent-Length: 0\r\n\r\n",
    "http/2 preface": b"HTTP/2 200\r\n\r\n",
    "closed inside the body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "closed inside a chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nshort",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "nothing": b"",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_what_http_client_refuses_is_a_bad_answer(name: str) -> None:
    data = BROKEN[name]
    with pytest.raises((http.client.HTTPException, ValueError)):
        stdlib(data)
    with pytest.raises(BadAnswer):
        ours(data)


@pytest.mark.parametrize(
    "data",
    [
        # http.client lets the email parser skip the line ("defects") ...
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
        # ... and takes headers cut short by the connection closing as complete.
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
def test_stricter_than_http_client_where_the_answer_is_damaged(data: bytes) -> None:
    """The batch is retried rather than taken as delivered on a damaged answer."""
    stdlib(data)
    with pytest.raises(BadAnswer):
        ours(data)


def test_an_endless_answer_is_cut_off() -> None:
    head = b"HTTP/1.1 200 OK\r\n\r\n"  # no length: read until close
    with pytest.raises(BadAnswer, match="too large"):
        ours(head + b"x" * (MAX_ANSWER_BYTES + 1), [65_536] * 200)


def test_bytes_past_the_answer_close_the_connection() -> None:
    status, _, _, body, keep_alive = ours(ANSWERS["content-length"] + b"HTTP/1.1 200 OK\r\n")
    assert (status, body, keep_alive) == (200, b'{"success":true}', False)


def test_request_head() -> None:
    head = request_head("/v1/batch", "127.0.0.1:8080", {"Content-Type": "application/json"}, 42)
    assert head == (
        b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: identity\r\n"
        b"Content-Type: application/json\r\nContent-Length: 42\r\n\r\n"
    )


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(200, 599),
    headers=st.lists(st.tuples(_token, _value), max_size=5),
    body=st.binary(max_size=300),
    chunks=st.one_of(st.none(), st.lists(st.integers(1, 64), min_size=1, max_size=8)),
    splits=st.lists(st.integers(1, 40), max_size=30),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
)
def test_any_answer_reads_as_http_client_reads_it(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    chunks: list[int] | None,
    splits: list[int],
    version: str,
) -> None:
    reserved = {"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection"}
    lines = [f"{version} {status} Reason"] + [f"{k}: {v}" for k, v in headers if k.lower() not in reserved]
    if chunks is None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        lines.append("Transfer-Encoding: chunked")
        payload, rest = b"", body
        for size in chunks:
            piece, rest = rest[:size], rest[size:]
            if piece:
                payload += b"%x\r\n%s\r\n" % (len(piece), piece)
        if rest:
            payload += b"%x\r\n%s\r\n" % (len(rest), rest)
        payload += b"0\r\n\r\n"
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    expected = stdlib(data)
    if status in (204, 304) and chunks is None:  # no body, whatever follows (bytes past the answer)
        assert ours(data, splits)[:4] == expected[:4]
    else:
        assert ours(data, splits) == expected


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8080/v1/batch", "127.0.0.1:8080"),
        ("https://api.segment.io", "api.segment.io"),
        ("https://api.segment.io:443", "api.segment.io"),
        ("http://[::1]:9000", "[::1]:9000"),
        ("https://user:pw@bücher.example:8443", "xn--bcher-kva.example:8443"),
    ],
)
def test_the_host_header_is_what_http_client_writes(url: str, host: str) -> None:
    from segment_middleware.http import _Direct

    assert _Direct(url, {}, True, None).host == host


def test_the_poster_keeps_one_connection_and_reconnects_after_a_close() -> None:
    """End to end through BatchPoster: three batches on one kept-alive connection; after an
    answer with ``Connection: close`` the next batch opens a new one."""
    import threading as _threading

    from segment_middleware.http import BatchPoster

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        for n in range(2):
            conn, _ = server.accept()
            accepted.append(n)
            with conn:
                for answered in range(3 if n == 0 else 1):
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(
                        next(
                            v
                            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                            if k.lower() == b"content-length"
                        )
                    )
                    while len(body) < length:
                        body += conn.recv(65536)
                    close = b"Connection: close\r\n" if answered == 2 else b""
                    conn.sendall(b"HTTP/1.1 200 OK\r\n" + close + b"Content-Length: 2\r\n\r\nok")

    thread = _threading.Thread(target=serve, daemon=True)
    thread.start()
    poster = BatchPoster(
        "key",
        f"http://127.0.0.1:{server.getsockname()[1]}",
        timeout=5,
        max_retries=0,
        gzip=False,
        abort=_threading.Event(),
    )
    for _ in range(4):
        poster.post([b'{"type":"track","event":"E"}'])
    thread.join(5)
    server.close()
    assert accepted == [0, 1]
