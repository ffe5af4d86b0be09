"""Consent per category: which messages a visitor's consent lets go, and readers of the
consent cookies that consent managers write.

``CONSENT`` (a callable ``request -> {category: bool}``) gives each request's answer; it is
sent as ``context.consent.categoryPreferences``, as Segment's Consent Management expects.
``EVENT_CATEGORIES`` (event name or glob -> category) and ``PAGE_CATEGORY`` say which
category a message belongs to. The decision (``categories.Categories.refuses``) is made
when the message is built, in ``messages.finish``: the one place every message passes (a tracker's calls, a
request's automatic page call, a background job's calls, the collection routes' events),
before ``BEFORE_SEND`` sees it. A refused message is not sent and is counted
``stats()["blocked"]``.

The rule, for a message whose category is known:

- with ``CONSENT`` unset there is no answer to check: the message goes;
- outside any request (a script, a job enqueued outside one) there is no visitor to ask:
  it goes;
- otherwise it goes only when every one of its categories is ``True`` in the request's
  answer. A category the answer leaves out, no answer at all (the visitor has not chosen
  yet), and a ``CONSENT`` that raised all count as refused: opt-in, as GDPR reads it. For
  an opt-out regime, give the readers ``defaults``.

The readers (:func:`onetrust`, :func:`json_cookie`) return a callable usable as
``CONSENT``. They take the request of any adapter (Django, Flask, Starlette, a WSGI
environ, an ASGI scope) and never raise on what the browser sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from .identity import cookie_value

__all__ = ["ConsentReader", "json_cookie", "onetrust", "onetrust_groups", "request_cookie"]

MAX_COOKIE = 4096  # characters: browsers keep no longer cookie; a longer value is ignored

ConsentReader = Callable[[Any], "dict[str, bool] | None"]


# ---------------------------------------------------------------------- reading cookies
def request_cookie(request: Any, name: str) -> str | None:
    """The raw value of cookie ``name`` on any adapter's request: Django's ``COOKIES``,
    Werkzeug's and Starlette's ``cookies``, a WSGI environ's ``HTTP_COOKIE``, an ASGI
    scope's ``cookie`` headers. None when absent or unreadable."""
    try:
        cookies = getattr(request, "COOKIES", None)
        if cookies is None and not isinstance(request, Mapping):
            cookies = getattr(request, "cookies", None)
        value: Any = None
        if isinstance(cookies, Mapping):
            value = cookies.get(name)
        elif isinstance(request, Mapping):
            if "HTTP_COOKIE" in request or "wsgi.version" in request:
                value = cookie_value(request.get("HTTP_COOKIE"), name)
            elif request.get("type") in ("http", "websocket"):
                parts = [v.decode("latin-1") for k, v in request.get("headers") or () if k == b"cookie"]
                value = cookie_value("; ".join(parts), name)
    except Exception:  # a request of a shape we do not know: no cookie
        return None
    if not isinstance(value, str):
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':  # RFC 6265's quoted form, from a raw header
        value = value[1:-1]
    return value


def onetrust(
    names: Mapping[str, str] | None = None,
    *,
    cookie: str = "OptanonConsent",
    defaults: Mapping[str, bool] | None = None,
) -> ConsentReader:
    """A ``CONSENT`` reader of OneTrust's ``OptanonConsent`` cookie.

    The cookie is a URL-encoded query string whose ``groups`` field lists the visitor's
    choice per category group: ``groups=C0001:1,C0002:0,C0003:1``. The answer keys are the
    group ids (``C0001`` strictly necessary, ``C0002`` performance, ``C0003`` functional,
    ``C0004`` targeting, ... as your OneTrust set-up numbers them), which is what Segment's
    OneTrust consent wrapper sends too; ``names`` renames them (``{"C0002": "analytics"}``)
    when your EVENT_CATEGORIES use names. ``defaults`` (after renaming) stand for groups
    the cookie does not mention, and for the whole answer when there is no cookie;
    without them a visitor with no cookie gives no answer (None)."""
    rename = dict(names or {})
    base = dict(defaults or {})

    def read(request: Any) -> dict[str, bool] | None:
        raw = request_cookie(request, cookie)
        groups = _onetrust_groups(raw) if raw else None
        if groups is None:
            return dict(base) if base else None
        return {**base, **{rename.get(group, group): granted for group, granted in groups.items()}}

    read.__qualname__ = read.__name__ = "onetrust_consent"
    return read


def _onetrust_groups(raw: str) -> dict[str, bool] | None:
    """The ``groups`` of an OptanonConsent value, or None when it has none we can read."""
    if len(raw) > MAX_COOKIE:
        return None
    try:
        fields = dict(parse_qsl(raw, keep_blank_values=True))
    except ValueError:
        return None
    text = fields.get("groups")
    if not text:
        return None
    groups: dict[str, bool] = {}
    for item in text.split(","):
        group, sep, flag = item.strip().partition(":")
        if sep and group and flag in ("0", "1") and len(group) <= 64:
            groups[group] = flag == "1"
    return groups or None


def json_cookie(
    cookie: str,
    *,
    key: str | Iterable[str] | None = None,
    defaults: Mapping[str, bool] | None = None,
) -> ConsentReader:
    """A ``CONSENT`` reader of a cookie holding a JSON object of categories to booleans,
    ``{"analytics": true, "advertising": false}`` (also URL-encoded, as ``document.cookie``
    writers often leave it). ``key`` names the object inside the JSON when it is nested
    (``"categoryPreferences"``, or a path ``["consent", "categories"]``). Values that are
    not booleans (nor 0/1) are left out. ``defaults`` stand for categories the cookie does
    not mention, and for the whole answer when there is no readable cookie."""
    path = (key,) if isinstance(key, str) else tuple(key or ())
    base = dict(defaults or {})

    def read(request: Any) -> dict[str, bool] | None:
        raw = request_cookie(request, cookie)
        found = _json_categories(raw, path) if raw else None
        if found is None:
            return dict(base) if base else None
        return {**base, **found}

    read.__qualname__ = read.__name__ = "json_cookie_consent"
    return read


def _json_categories(raw: str, path: tuple[str, ...]) -> dict[str, bool] | None:
    if len(raw) > MAX_COOKIE:
        return None
    text = raw.strip()
    if text[:1] != "{" and "%" in text:
        text = unquote(text)
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return None
    answer: dict[str, bool] = {}
    for category, flag in value.items():
        if isinstance(flag, bool):
            answer[category] = flag
        elif isinstance(flag, int) and flag in (0, 1):
            answer[category] = bool(flag)
    return answer


#: A ready ``CONSENT`` reader of OneTrust's cookie with the group ids as categories (no
#: renaming, no defaults), for settings that name a dotted path:
#: ``"CONSENT": "segment_middleware.consent.onetrust_groups"``.
onetrust_groups: ConsentReader = onetrust()
