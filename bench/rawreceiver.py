"""A lean Segment-compatible ``/v1/batch`` endpoint for benchmarks: keep the bytes, parse later.

The test suite's receiver (``tests/segment_receiver.py``) decodes, validates and records
every batch as it arrives: about 38 µs of CPU per message on a 2-core machine, as much as
the sender being measured. In a benchmark that CPU is taken from the two cores the
measured process needs, so it inflates the wall-clock overhead of every stack that sends
(ours and the naive SDK alike) and says nothing about them: api.segment.io is not on the
client's machine. This endpoint checks the path and the Basic auth header, keeps the raw
body and answers 200 at once (one ``send``, TCP_NODELAY, keep-alive); at SIGTERM it
decodes everything and prints the same JSON summary line as the test receiver (with
``--detail``: messages by type, distinct messageIds and ``context.page.path`` counts), so
the benchmarks still check exactly what arrived.

    python bench/rawreceiver.py --write-key K [--port 0] [--max-seconds N] [--detail]
"""

from __future__ import annotations

import argparse
import base64
import collections
import gzip
import http.server
import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from segment_receiver import exit_signal_event, wait_for_signal

OK = b'{"success":true}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the benchmark's output stays clean."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path != "/v1/batch":
            status = 404
        elif self.headers.get("Authorization") != self.server.auth:
            status = 401
        else:
            status = 200
            gz = self.headers.get("Content-Encoding", "").lower() == "gzip"
            with self.server.lock:
                self.server.bodies.append((gz, body))
        with self.server.lock:
            self.server.requests += 1
        payload = OK if status == 200 else b'{"success":false}'
        self.wfile.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, b"OK" if status == 200 else b"Error", len(payload), payload)
        )


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, write_key: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self.auth = f"Basic {token}"
        self.lock = threading.Lock()
        self.bodies: list[tuple[bool, bytes]] = []
        self.requests = 0


def summarize(bodies: list[tuple[bool, bytes]], requests: int, detail: bool) -> dict[str, Any]:
    """What arrived, decoded only now (after the measurement)."""
    messages: list[dict[str, Any]] = []
    for gz, raw in bodies:
        data = gzip.decompress(raw) if gz else raw
        messages.extend(json.loads(data).get("batch", []))
    summary: dict[str, Any] = {"requests": requests, "messages": len(messages)}
    if detail:
        pages = ((m.get("context") or {}).get("page") or {} for m in messages)
        summary["types"] = dict(collections.Counter(m.get("type") for m in messages))
        summary["message_ids"] = len({m.get("messageId") for m in messages})
        summary["paths"] = dict(collections.Counter(page.get("path") for page in pages))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--detail", action="store_true", help="also count types, messageIds, paths")
    args = parser.parse_args(argv)

    done = exit_signal_event()
    server = _Server(args.port, args.write_key)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    wait_for_signal(args.max_seconds, done)
    server.shutdown()
    server.server_close()
    with server.lock:
        bodies, requests = list(server.bodies), server.requests
    print(json.dumps(summarize(bodies, requests, args.detail)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
