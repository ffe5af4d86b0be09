"""USER_ID for the tests: the signed-in user is whoever the X-Test-User header names."""

from typing import Any


def user_from_header(request: Any) -> str | None:
    return request.headers.get("X-Test-User") or None
