"""A Segment-Public-API-compatible receiver for the regulations endpoints, on 127.0.0.1.

It answers what ``segment_middleware.public_api`` calls, as Segment documents them
(``segmentio/public-api-sdk-python``, DeletionAndSuppressionApi):

- ``POST /regulations`` ``{"regulationType", "subjectType", "subjectIds"}`` (1 to 5,000
  ids, else 422) -> ``{"data": {"regulateId": ...}}``;
- ``GET /regulations?pagination.count=N&pagination.cursor=C`` -> ``{"data": {"regulations":
  [...], "pagination": {"current", "next"}}}``, newest first;
- ``GET /regulations/{id}`` -> ``{"data": {"regulation": {...}}}``, 404 when unknown.

Every request must carry ``Authorization: Bearer <token>`` (else 401, Segment's
``{"errors": [...]}`` body). Every request is recorded, whatever its answer; a test can make
the next answers 429 (with or without ``Retry-After``) or 5xx. Standard library only.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback import LoopbackServer

__all__ = ["PublicAPIReceiver", "Seen"]

MAX_SUBJECT_IDS = 5000


@dataclass
class Seen:
    """One request as received: ``status`` is what it was answered; ``at`` its monotonic time."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    at: float


class PublicAPIReceiver(LoopbackServer):
    """``with PublicAPIReceiver("token") as api: ... api.url ...``"""

    def __init__(self, token: str) -> None:
        self.token = token
        self.seen: list[Seen] = []
        self.regulations: list[dict[str, Any]] = []  # oldest first
        self._faults: list[tuple[int, str | None]] = []  # (status, Retry-After) for the next answers
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        super().__init__(self._handler(), "public-api")

    # ------------------------------------------------------------------ test controls
    def fail_next(self, times: int, status: int = 429, retry_after: str | None = None) -> None:
        """The next ``times`` requests are answered ``status`` (with ``Retry-After`` if given)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    def set_status(self, regulate_id: str, status: str) -> None:
        with self._lock:
            for item in self.regulations:
                if item["id"] == regulate_id:
                    item["overallStatus"] = status
                    item["finishedAt"] = "2026-12-07T10:00:00Z"

    def posts(self) -> list[Seen]:
        """The POST /regulations requests that filed a regulation (answered 200)."""
        with self._lock:
            return [s for s in self.seen if s.method == "POST" and s.status == 200]

    def wait_for_posts(self, n: int, timeout: float = 20.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([s for s in self.seen if s.method == "POST" and s.status == 200]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {n} filed regulation(s); saw {self.seen}")
                self._changed.wait(left)
        return self.posts()

    # ------------------------------------------------------------------ the server
    def _answer(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        status, extra, payload = self._decide(method, parts.path, query, headers, body)
        with self._changed:
            self.seen.append(Seen(method, parts.path, query, headers, body, status, time.monotonic()))
            self._changed.notify_all()
        return status, extra, payload

    def _decide(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            if self._faults:
                status, retry_after = self._faults.pop(0)
                extra = {"Retry-After": retry_after} if retry_after is not None else {}
                return (
                    status,
                    extra,
                    _errors("too_many_requests" if status == 429 else "internal", "injected"),
                )
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth != f"Bearer {self.token}":
            return 401, {}, _errors("unauthorized", "the token is missing or invalid")
        if path == "/regulations" and method == "POST":
            return self._create(body)
        if path == "/regulations" and method == "GET":
            return self._list(query)
        if path.startswith("/regulations/") and method == "GET":
            regulate_id = path.rsplit("/", 1)[1]
            with self._lock:
                found = [dict(r) for r in self.regulations if r["id"] == regulate_id]
            if not found:
                return 404, {}, _errors("not_found", "regulation not found")
            return 200, {}, {"data": {"regulation": found[0]}}
        return 404, {}, _errors("not_found", f"no such endpoint: {method} {path}")

    def _create(self, body: Any) -> tuple[int, dict[str, str], Any]:
        if not isinstance(body, dict):
            return 422, {}, _errors("validation", "the body must be a JSON object")
        ids = body.get("subjectIds")
        if body.get("subjectType") not in ("USER_ID", "OBJECT_ID"):
            return 422, {}, _errors("validation", "subjectType must be USER_ID or OBJECT_ID")
        if not isinstance(body.get("regulationType"), str):
            return 422, {}, _errors("validation", "regulationType is required")
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SUBJECT_IDS:
            return 422, {}, _errors("validation", f"subjectIds must hold 1 to {MAX_SUBJECT_IDS} ids")
        if not all(isinstance(i, str) and i for i in ids):
            return 422, {}, _errors("validation", "subjectIds must be non-empty strings")
        with self._lock:
            regulate_id = f"reg{len(self.regulations) + 1:06d}"
            self.regulations.append(
                {
                    "id": regulate_id,
                    "workspaceId": "ws-test",
                    "overallStatus": "INITIALIZED",
                    "regulationType": body["regulationType"],
                    "subjectType": body["subjectType"],
                    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "finishedAt": None,
                }
            )
        return 200, {}, {"data": {"regulateId": regulate_id}}

    def _list(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        try:
            count = int(query["pagination.count"][0])
        except (KeyError, ValueError):
            return 422, {}, _errors("validation", "pagination.count is required")
        if not 1 <= count <= 200:
            return 422, {}, _errors("validation", "pagination.count must be 1 to 200")
        start = int(query.get("pagination.cursor", ["0"])[0])
        with self._lock:
            newest_first = [dict(r) for r in reversed(self.regulations)]
        page = newest_first[start : start + count]
        following = str(start + count) if start + count < len(newest_first) else None
        return (
            200,
            {},
            {"data": {"regulations": page, "pagination": {"current": str(start), "next": following}}},
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, extra, payload = receiver._answer(self.command, self.path, dict(self.headers), raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.segment.v1+json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler


def _errors(kind: str, message: str) -> dict[str, Any]:
    return {"errors": [{"type": kind, "message": message}]}
