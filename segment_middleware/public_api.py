"""A small client of Segment's Public API: the regulations (user deletion) endpoints only.

``POST /regulations`` files a workspace regulation (``{"regulationType", "subjectType",
"subjectIds"}``, at most :data:`MAX_SUBJECT_IDS` ids a call) and answers
``{"data": {"regulateId": ...}}``; ``GET /regulations`` lists them (``pagination.count``,
``pagination.cursor``) and ``GET /regulations/{id}`` reads one, as
``segmentio/public-api-sdk-python`` documents them.

Why not that SDK: it is a generated client of the whole API with its own dependencies
(pydantic, ...); three endpoints over urllib3, already installed with
``segment-analytics-python``, keep the package's dependencies as they are. The connection
is made as the sender's are (``http.connection_pool``: the environment's proxy, TLS
verified against the same CA bundle).

The token is a Bearer credential: it is sent in the ``Authorization`` header and nowhere
else, and no repr, log line or exception text of this module contains it.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .version import __version__

__all__ = ["MAX_SUBJECT_IDS", "PublicAPI", "PublicAPIError", "RegulationPage"]

log = logging.getLogger("segment_middleware")

MAX_SUBJECT_IDS = 5000  # subjectIds Segment takes in one regulation
MAX_ATTEMPTS = 8  # tries of one call: rate limits, 5xx and network errors retried in between
MAX_WAIT = 60.0  # seconds: the longest single wait before a retry
MAX_TOTAL_WAIT = 600.0  # seconds: after this much waiting, the call gives up
_MEDIA = "application/vnd.segment.v1+json"


class PublicAPIError(Exception):
    """The Public API refused a call or could not be reached. ``status`` is the HTTP status
    (0: no answer). The text quotes Segment's own error message, never the token."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(
            f"Segment Public API: {message}" if not status else f"Segment Public API {status}: {message}"
        )
        self.status = status
        self.filed: list[str] = []  # regulations a multi-call deletion filed before this failure


@dataclass(frozen=True)
class RegulationPage:
    """One page of ``GET /regulations``: the regulations as Segment describes them
    (``id``, ``overallStatus``, ``createdAt``, ``finishedAt``, ...) and the next page's cursor."""

    regulations: list[dict[str, Any]]
    next_cursor: str | None


class PublicAPI:
    """The regulations endpoints of one workspace (the token's). Thread-safe."""

    def __init__(
        self,
        token: str,
        host: str = "https://api.segmentapis.com",
        *,
        timeout: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._token = token
        self.host = host.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self._pool: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PublicAPI(host={self.host!r}, token=<set>)"

    # ------------------------------------------------------------------ endpoints
    def create_regulation(
        self, subject_ids: Sequence[str], regulation_type: str = "SUPPRESS_WITH_DELETE"
    ) -> str:
        """File one regulation of these userIds (at most MAX_SUBJECT_IDS); its id."""
        if not subject_ids or len(subject_ids) > MAX_SUBJECT_IDS:
            raise ValueError(f"a regulation names 1 to {MAX_SUBJECT_IDS} userIds, got {len(subject_ids)}")
        body = {"regulationType": regulation_type, "subjectType": "USER_ID", "subjectIds": list(subject_ids)}
        answer = self._call("POST", "/regulations", body=body)
        regulate_id = _dig(answer, "data", "regulateId")
        if not isinstance(regulate_id, str) or not regulate_id:
            raise PublicAPIError(0, "POST /regulations answered without a regulateId")
        return regulate_id

    def list_regulations(self, count: int = 50, cursor: str | None = None) -> RegulationPage:
        """One page of the workspace's regulations (Segment keeps 90 days of them)."""
        query: dict[str, Any] = {"pagination.count": count}
        if cursor:
            query["pagination.cursor"] = cursor
        answer = self._call("GET", "/regulations?" + urlencode(query))
        regulations = _dig(answer, "data", "regulations")
        following = _dig(answer, "data", "pagination", "next")
        return RegulationPage(
            [r for r in regulations if isinstance(r, dict)] if isinstance(regulations, list) else [],
            following if isinstance(following, str) and following else None,
        )

    def get_regulation(self, regulate_id: str) -> dict[str, Any]:
        answer = self._call("GET", "/regulations/" + quote(regulate_id, safe=""))
        found = _dig(answer, "data", "regulation")
        if not isinstance(found, dict):
            raise PublicAPIError(0, "GET /regulations/{id} answered without a regulation")
        return found

    # ------------------------------------------------------------------ transport
    def _connections(self) -> Any:
        with self._lock:
            if self._pool is None:
                from .http import connection_pool  # urllib3, loaded only when a call is made

                self._pool = connection_pool(self.host)
            return self._pool

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call, retried on 429 (waiting as Retry-After says, else backing off),
        5xx and network errors, up to MAX_ATTEMPTS and MAX_TOTAL_WAIT. A retried POST may
        file a second regulation of the same ids, which is harmless (deleting twice)."""
        from segment.analytics.request import parse_retry_after

        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": f"{_MEDIA}, application/json",
            "User-Agent": f"segment-middleware/{__version__}",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        what = f"{method} {urlsplit(path).path}"
        waited = 0.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            delay: float | None
            try:
                res = self._connections().urlopen(
                    method,
                    self.host + path,
                    body=data,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    timeout=self.timeout,
                )
            except Exception as exc:  # refused, reset, timed out
                error = PublicAPIError(0, f"{what}: {type(exc).__name__}")
                delay = None
            else:
                if 200 <= res.status < 300:
                    try:
                        return json.loads(res.data or b"{}")
                    except ValueError:
                        raise PublicAPIError(res.status, f"{what}: the answer is not JSON") from None
                error = PublicAPIError(res.status, f"{what}: {self._reason(res)}")
                if res.status != 429 and not 500 <= res.status < 600:
                    raise error
                delay = parse_retry_after(res) if res.status == 429 else None
            if attempt == MAX_ATTEMPTS:
                break
            if delay is None:  # no Retry-After: 1 s, 2 s, 4 s ... with jitter
                delay = 2.0 ** (attempt - 1) * (1 + random.uniform(0, 0.1))
            delay = min(float(delay), MAX_WAIT)
            if waited + delay > MAX_TOTAL_WAIT:
                break
            log.info(
                "segment: the Public API answered %s to %s; retrying in %.1f s",
                error.status or "nothing",
                what,
                delay,
            )
            self._sleep(delay)
            waited += delay
        raise error

    def _reason(self, res: Any) -> str:
        """Segment's ``{"errors": [{"type", "message"}]}``, else the status's reason."""
        text = ""
        try:
            errors = json.loads(res.data).get("errors")
            text = "; ".join(str(e.get("message") or e.get("type")) for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError, TypeError):
            pass
        text = " ".join((text or res.reason or "error").split())[:300]
        return text.replace(self._token, "<the Public API token>") if len(self._token) >= 4 else text


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
