"""One HTTP/1.1 POST and its answer on a kept-alive socket: the sender's direct path.

Why not ``http.client``: for each batch it makes a file object over the socket, checks
every header against regular expressions and parses the answer's headers with the
``email`` package, on the thread that shares the GIL with the app's requests; that work
costs more than the exchange itself (figures in bench/README.md). The endpoint's answers are
small and plain: a status line, a few headers, a short JSON body. So the request is
written as one block, and the answer is read the way ``http.client`` reads it (an
interim 1xx skipped, then Content-Length, chunked, or until the connection closes);
``tests/test_http1.py`` holds this reader to ``http.client``'s reading of the same bytes.
Anything this reader does not understand raises :class:`BadAnswer`, which the sender
treats like a dropped connection: the batch is retried.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl

__all__ = ["MAX_ANSWER_BYTES", "Answer", "BadAnswer", "read_answer", "request_head"]

MAX_HEAD_BYTES = 65_536  # status line and headers (http.client: 100 headers of 64 KB)
MAX_ANSWER_BYTES = 8 << 20  # a body past this is not an endpoint's answer


class BadAnswer(OSError):
    """The connection closed early, or sent what is not an HTTP/1.x answer."""


@dataclasses.dataclass(slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # as received, in their case
    body: bytes
    keep_alive: bool  # the connection may carry the next request


def request_head(target: str, host: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers of a POST with a ``length``-byte body."""
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """Bytes from a socket, kept in one buffer between reads."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def more(self) -> bool:
        """Read what has arrived (waiting up to the socket's timeout); False at the end."""
        chunk = self.sock.recv(65_536)
        self.buffer += chunk
        if len(self.buffer) > MAX_ANSWER_BYTES:
            raise BadAnswer("answer too large")
        return bool(chunk)

    def until(self, end: bytes, limit: int) -> bytes:
        """The bytes up to ``end`` (taken from the buffer, ``end`` dropped)."""
        start = 0
        while True:
            found = self.buffer.find(end, start)
            if found >= 0:
                block = bytes(self.buffer[:found])
                del self.buffer[: found + len(end)]
                return block
            if len(self.buffer) > limit:
                raise BadAnswer("header line too long")
            start = max(0, len(self.buffer) - len(end) + 1)
            if not self.more():
                raise BadAnswer("connection closed before the answer's headers")

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.more():
                raise BadAnswer("connection closed inside the answer's body")
        block = bytes(self.buffer[:size])
        del self.buffer[:size]
        return block

    def rest(self) -> bytes:
        while self.more():
            pass
        block = bytes(self.buffer)
        self.buffer.clear()
        return block


def _head(reader: _Reader) -> tuple[int, int, str, list[tuple[str, str]]]:
    """(version 10 or 11, status, reason, headers) of the next answer head."""
    lines = reader.until(b"\r\n\r\n", MAX_HEAD_BYTES).decode("latin-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or (not parts[0].startswith("HTTP/1.") and parts[0] != "HTTP/0.9"):
        raise BadAnswer("not an HTTP/1.x status line")
    if not (parts[1].isascii() and parts[1].isdigit() and 100 <= int(parts[1]) <= 999):
        raise BadAnswer("bad status code")
    version = 10 if parts[0] in ("HTTP/1.0", "HTTP/0.9") else 11
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise BadAnswer("bad header line")
        headers.append((name.strip(), value.lstrip(" \t")))  # http.client keeps trailing blanks
    return version, int(parts[1]), parts[2].strip() if len(parts) > 2 else "", headers


def _chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while True:
        line = reader.until(b"\r\n", MAX_HEAD_BYTES).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise BadAnswer("bad chunk size") from None
        if size < 0:
            raise BadAnswer("bad chunk size")
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD_BYTES):  # trailer lines, then an empty one
                pass
            return bytes(body)
        body += reader.exactly(size)
        if len(body) > MAX_ANSWER_BYTES:
            raise BadAnswer("answer too large")
        reader.exactly(2)  # the chunk's CRLF


def read_answer(sock: socket.socket | ssl.SSLSocket) -> Answer:
    """The endpoint's answer to the request just sent on ``sock``."""
    reader = _Reader(sock)
    while True:
        version, status, reason, headers = _head(reader)
        if status != 100:  # 100 Continue: its (empty) head is skipped, as http.client does
            break
    fields: dict[str, str] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), value)
    connection = fields.get("connection", "").lower()
    if version == 11:
        keep_alive = "close" not in connection
    else:
        keep_alive = (
            "keep-alive" in fields
            or "keep-alive" in connection
            or "keep-alive" in fields.get("proxy-connection", "").lower()
        )
    if fields.get("transfer-encoding", "").lower() == "chunked":  # before 204/304, as http.client
        body = _chunked(reader)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        length = _length(fields.get("content-length"))
        if length is None:
            body, keep_alive = reader.rest(), False
        else:
            body = reader.exactly(length)
    if reader.buffer:  # bytes past the answer: do not trust the connection with another
        keep_alive = False
    return Answer(status, reason, headers, body, keep_alive)


def _length(value: str | None) -> int | None:
    """Content-Length as http.client reads it: a bad or negative one is no length."""
    if not value:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
