"""Request facts, and the Segment ``context``/page properties built from them.

Adapters copy a handful of raw strings out of their request into :class:`RequestFacts`
(cheap: a few dict lookups). Everything that costs anything - URL assembly, query parsing
and redaction, campaign, locale, proxy-aware IP - happens later, on the sender thread, so
a request pays for none of it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from .version import LIBRARY

__all__ = ["RequestFacts", "build_context", "page_properties"]

REDACTED = "[REDACTED]"
_REDACTED_Q = quote(REDACTED)

_CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


class RequestFacts:
    """Raw, unparsed facts about one request, as the adapter found them.

    ``built`` caches the derived context so that every message of one request shares it.
    """

    __slots__ = (
        "accept_language",
        "built",
        "consent",
        "forwarded_for",
        "host",
        "method",
        "path",
        "query",
        "referrer",
        "remote_addr",
        "scheme",
        "user_agent",
    )

    def __init__(
        self,
        method: str,
        scheme: str,
        host: str,
        path: str,
        query: str = "",
        referrer: str | None = None,
        user_agent: str | None = None,
        accept_language: str | None = None,
        remote_addr: str | None = None,
        forwarded_for: str | None = None,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.host = host
        self.path = path
        self.query = query
        self.referrer = referrer
        self.user_agent = user_agent
        self.accept_language = accept_language
        self.remote_addr = remote_addr
        self.forwarded_for = forwarded_for
        self.consent: Mapping[str, bool] | None = None
        self.built: _Built | None = None


class _Built:
    __slots__ = ("context", "page", "query")

    def __init__(self, context: dict[str, Any], page: dict[str, Any], query: dict[str, Any]) -> None:
        self.context = context
        self.page = page
        self.query = query


# ------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=2048)
def _sensitive(key: str, words: frozenset[str]) -> bool:
    """Is this query key one to redact? ``access_token``, ``user[email]``, ``API-Key`` are."""
    low = key.lower()
    if low in words:
        return True
    for sep in "_-.[]":
        low = low.replace(sep, " ")
    return any(part in words for part in low.split())


def _unquote(text: str) -> str:
    return unquote_plus(text) if ("%" in text or "+" in text) else text


def redact_query(query: str, words: frozenset[str]) -> tuple[str, list[tuple[str, str]]]:
    """The query string with sensitive values replaced, and its decoded pairs (redacted).

    A hand-rolled split rather than ``parse_qsl``: this runs for every page call, most
    parameters need no decoding, and untouched parameters keep their original encoding.
    """
    if not query:
        return "", []
    pairs: list[tuple[str, str]] = []
    parts: list[str] = []
    changed = False
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = _unquote(raw_key)
        if _sensitive(key, words):
            pairs.append((key, REDACTED))
            parts.append(f"{raw_key}={_REDACTED_Q}")
            changed = True
        else:
            pairs.append((key, _unquote(raw_value)))
            parts.append(part)
    return ("&".join(parts) if changed else query), pairs


def redact_url(url: str | None, words: frozenset[str]) -> str:
    if not url:
        return ""
    if "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if not parts.query:
        return url
    query, _ = redact_query(parts.query, words)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@functools.lru_cache(maxsize=32)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_ip(facts: RequestFacts, trusted: tuple[str, ...], anonymize: bool) -> str | None:
    """The client address; X-Forwarded-For is believed only when the peer is a trusted proxy.

    Walking the list from the right and skipping trusted hops means a visitor cannot
    spoof their address by sending their own X-Forwarded-For.
    """
    if not trusted and not anonymize:
        return facts.remote_addr or None  # the server's own peer address: nothing to parse
    peer = _ip(facts.remote_addr)
    address = peer
    if peer is not None and trusted and facts.forwarded_for:
        nets = _networks(trusted)
        if any(peer in net for net in nets):
            for hop in reversed(facts.forwarded_for.split(",")):
                candidate = _ip(hop)
                if candidate is None:
                    break
                address = candidate
                if not any(candidate in net for net in nets):
                    break
    if address is None:
        return None
    if anonymize:
        bits = 8 if address.version == 4 else 80
        net = ipaddress.ip_network(f"{address}/{address.max_prefixlen - bits}", strict=False)
        address = net.network_address
    return str(address)


def locale(accept_language: str | None) -> str | None:
    if not accept_language:
        return None
    tag = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    if not tag or tag == "*" or len(tag) > 35 or not tag.replace("-", "").replace("_", "").isalnum():
        return None
    return tag


# ------------------------------------------------------------------ building
def build(facts: RequestFacts, settings: Any) -> _Built:
    """Derive (once per request) the context and page facts shared by its messages."""
    if facts.built is not None:
        return facts.built
    words = _redact_words(settings.redact_query_params)
    search_qs, pairs = redact_query(facts.query, words)
    search = "?" + search_qs if search_qs else ""
    url = f"{facts.scheme}://{facts.host}{facts.path}{search}"
    referrer = redact_url(facts.referrer, words)
    page: dict[str, Any] = {"path": facts.path, "url": url, "referrer": referrer, "search": search}
    context: dict[str, Any] = {"library": LIBRARY, "page": page}
    ip = client_ip(facts, settings.trusted_proxies, settings.anonymize_ip)
    if ip:
        context["ip"] = ip
    if facts.user_agent:
        context["userAgent"] = facts.user_agent
    loc = locale(facts.accept_language)
    if loc:
        context["locale"] = loc
    campaign = {_CAMPAIGN[k]: v for k, v in pairs if k in _CAMPAIGN and v}
    if campaign:
        context["campaign"] = campaign
    if facts.consent is not None:
        context["consent"] = {"categoryPreferences": dict(facts.consent)}
    query: dict[str, Any] = {}
    for key, value in pairs:
        if key in query:
            previous = query[key]
            query[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            query[key] = value
    facts.built = _Built(context, page, query)
    return facts.built


@functools.lru_cache(maxsize=8)
def _redact_words(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(words)


def build_context(facts: RequestFacts | None, settings: Any) -> dict[str, Any]:
    """The request's context, a copy per message (the page part is shared unless
    before_send hooks, which may change it in place, are configured)."""
    if facts is None:
        return {"library": dict(LIBRARY)}
    built = build(facts, settings)
    context = dict(built.context)
    if settings.before_send:
        context["page"] = dict(built.page)
        context["library"] = dict(LIBRARY)
    return context


def page_properties(
    facts: RequestFacts, settings: Any, status: int | None, title: str | None
) -> dict[str, Any]:
    built = build(facts, settings)
    props: dict[str, Any] = dict(built.page)
    props["method"] = facts.method
    if status is not None:
        props["status"] = status
    if title:
        props["title"] = title
    if settings.include_query_params and built.query:
        props["query"] = dict(built.query)
    return props
