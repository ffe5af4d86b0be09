"""A Segment-Profile-API-compatible receiver for the traits endpoint, on 127.0.0.1.

It answers as Segment documents the Profile API (segment-docs ``src/unify/profile-api.md``):

- ``GET /v1/spaces/<space_id>/collections/users/profiles/<type>:<id>/traits`` with
  ``limit`` (1-200, default 10), ``include`` (comma-separated names) and ``class``
  (``audience`` or ``computed_trait``) -> ``{"traits": {...}, "cursor": {"url", "has_more",
  "next", "limit"}}``;
- an unknown profile -> 404 ``{"error": {"code": "not_found", "message": "Profile was not
  found."}}``; a wrong space -> 404 too;
- the access token as HTTP Basic user name with an empty password, else 401
  ``{"error": {"code": "authentication_error", ...}}``.

A profile's audiences are traits whose values are booleans (``True``: in it now). Every
request is recorded; a test can delay the answers, or make the next ones fail with a
status. Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from loopback import LoopbackServer

__all__ = ["ProfileReceiver", "Seen"]


@dataclass
class Seen:
    path: str  # decoded
    query: dict[str, list[str]]
    authorization: str | None
    status: int


class ProfileReceiver(LoopbackServer):
    """``with ProfileReceiver("space", "token") as api: ... api.url ...``"""

    def __init__(self, space_id: str, token: str) -> None:
        self.space_id = space_id
        self.token = token
        self.seen: list[Seen] = []
        self.traits: dict[str, dict[str, Any]] = {}  # external id ("user_id:u1") -> its traits
        self.audiences: dict[str, dict[str, bool]] = {}  # external id -> audience -> in it now
        self.delay = 0.0  # seconds before each answer
        self.body: bytes | None = None  # when set: every answer is 200 with this body, as is
        self._faults: list[int] = []
        self._lock = threading.Lock()
        super().__init__(self._handler(), "profiles")

    def fail_next(self, times: int, status: int = 500) -> None:
        with self._lock:
            self._faults.extend([status] * times)

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    # ------------------------------------------------------------------ the answers
    def _answer(self, target: str, authorization: str | None) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        path = unquote(parts.path)
        status, body = self._decide(path, query, authorization)
        with self._lock:
            self.seen.append(Seen(path, query, authorization, status))
        return status, body

    def _decide(self, path: str, query: dict[str, list[str]], authorization: str | None) -> tuple[int, Any]:
        with self._lock:
            if self._faults:
                status = self._faults.pop(0)
                code = "rate_limit_error" if status == 429 else "internal_error"
                return status, {"error": {"code": code, "message": "injected"}}
        expected = "Basic " + base64.b64encode(f"{self.token}:".encode()).decode()
        if authorization != expected:
            return 401, {
                "error": {"code": "authentication_error", "message": "No valid Access Token provided."}
            }
        prefix = f"/v1/spaces/{self.space_id}/collections/users/profiles/"
        if not path.startswith(prefix) or not path.endswith("/traits"):
            return 404, {"error": {"code": "not_found", "message": "Profile was not found."}}
        external_id = path[len(prefix) : -len("/traits")]
        if external_id not in self.traits and external_id not in self.audiences:
            return 404, {"error": {"code": "not_found", "message": "Profile was not found."}}
        audiences: dict[str, Any] = dict(self.audiences.get(external_id, {}))
        kind = (query.get("class") or [""])[0]
        if kind == "audience":
            traits = audiences
        elif kind == "computed_trait":
            traits = {}
        else:
            traits = {**self.traits.get(external_id, {}), **audiences}
        include = (query.get("include") or [""])[0]
        if include:
            wanted = set(include.split(","))
            traits = {k: v for k, v in traits.items() if k in wanted}
        try:
            limit = max(1, min(200, int((query.get("limit") or ["10"])[0])))
        except ValueError:
            return 400, {"error": {"code": "validation_error", "message": "limit must be a number"}}
        names = list(traits)[:limit]
        return 200, {
            "traits": {k: traits[k] for k in names},
            "cursor": {
                "url": f"{prefix}{external_id}/traits",
                "has_more": len(traits) > limit,
                "next": names[-1] if len(traits) > limit else "",
                "limit": limit,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

            def do_GET(self) -> None:
                if receiver.delay:
                    time.sleep(receiver.delay)  # the slow Profile API being simulated, not a wait
                status, body = receiver._answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                if receiver.body is not None:
                    status, data = 200, receiver.body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "1111-2222-3333-4444")
                self.end_headers()
                # A client that read what it wanted (a capped read) may hang up first.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
