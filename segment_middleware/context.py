"""Request facts, and the Segment ``context`` and page properties derived from them.

Adapters copy a handful of raw strings out of their request into :class:`RequestFacts`
(a few dict lookups). Everything else - URL assembly, query parsing and redaction,
campaign, locale, proxy-aware IP - happens once, when the message is built
(``messages.prepare``: as it is queued, or on the sender thread; see
``Settings.builds_when_queued``), with what recurs across requests cached.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import operator
import re
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from .scrub import CAPS, clean_forwarded_for, clean_text, printable, printable_ascii
from .version import LIBRARY

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "CACHES",
    "Recurring",
    "RequestFacts",
    "carried_facts",
    "clean_facts",
    "facts_from_carried",
    "facts_values",
    "nothing_to_clean",
    "page_properties",
    "request_context",
]

REDACTED = "[REDACTED]"
_REDACTED_Q = quote(REDACTED)

_CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}


@dataclasses.dataclass(slots=True)
class RequestFacts:
    """Raw, unparsed facts about one request, as the adapter found them.

    ``path`` is the full path the browser asked for (mount prefix included); the message's
    ``url``, ``path`` and ``search`` are derived from it and from ``query`` by the sender.
    Not changed once made. A class with slots, not a named tuple: the sender reads each
    field several times, and slot reads are the fast ones. In the queue it waits as the
    plain tuple :func:`facts_values` gives (see ``messages.Queued.pack``).
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str = ""
    referrer: str | None = None
    user_agent: str | None = None
    accept_language: str | None = None
    remote_addr: str | None = None
    forwarded_for: str | None = None
    consent: Mapping[str, bool] | None = None  # CONSENT's answer for this request


def clean_facts(facts: RequestFacts) -> RequestFacts:
    """The facts with every visitor-chosen string cleaned (the same object when nothing
    needed it). ``scheme`` and ``remote_addr`` come from the server, ``consent`` from the
    app's own callable."""
    if nothing_to_clean(facts):
        return facts
    changes: dict[str, Any] = {}
    for name in ("method", "host", "path", "query", "referrer", "user_agent", "accept_language"):
        value = getattr(facts, name)
        if value is not None:
            cleaned = clean_text(value, CAPS[name])
            if cleaned is not value:
                changes[name] = cleaned
    forwarded = facts.forwarded_for
    if forwarded is not None:
        cleaned = clean_forwarded_for(forwarded)
        if cleaned is not forwarded:
            changes["forwarded_for"] = cleaned
    return dataclasses.replace(facts, **changes) if changes else facts


# Joined, the facts are at most this long only if each of those not checked on its own
# (path, query, referrer, forwarded_for) is within its cap.
_JOINED_CAP = min(CAPS["path"], CAPS["query"], CAPS["referrer"], CAPS["forwarded_for"])


def nothing_to_clean(facts: RequestFacts) -> bool:
    """True when every visitor-chosen fact is printable ASCII within its cap, which is when
    :func:`clean_facts` changes none of them: the usual request, told by one joined string
    and five lengths instead of a cleaning call per fact. Invariant: True implies each
    fact's own cleaning returns it as it is (``tests/test_scrub.py`` holds the two to each
    other); False only means the facts are looked at one by one. A None fact joins as
    ``"None"``: printable ASCII."""
    f = facts
    text = (
        f"{f.method}{f.host}{f.path}{f.query}"
        f"{f.referrer}{f.user_agent}{f.accept_language}{f.forwarded_for}"
    )
    return (
        len(text) <= _JOINED_CAP
        and printable_ascii(text)
        and len(f.method) <= CAPS["method"]
        and len(f.host) <= CAPS["host"]
        and (f.user_agent is None or len(f.user_agent) <= CAPS["user_agent"])
        and (f.accept_language is None or len(f.accept_language) <= CAPS["accept_language"])
    )


# The fields' values in their declared order, as one plain tuple (RequestFacts(*values)
# makes the facts again); derived from the field list, so it cannot fall out of step.
facts_values: Callable[[RequestFacts], tuple[Any, ...]] = operator.attrgetter(
    *[field.name for field in dataclasses.fields(RequestFacts)]
)


# ------------------------------------------------------------------ the one cache
RECURRING_MAX = 1024  # entries per cache; cleared when full
RECURRING_TEXT_MAX = 512  # a longer text is never kept: memory stays bounded

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Recurring(dict[_K, _V]):
    """``fn(key)`` remembered for keys that recur across requests: query strings of
    campaign links, referrers, Accept-Language headers, query keys. Read as
    ``cache[key]``: a hit is one dict lookup, with no Python call in between; a miss
    computes ``fn(key)`` and keeps it when its text (the key, or a tuple key's first
    item) is at most :data:`RECURRING_TEXT_MAX` long. At most :data:`RECURRING_MAX`
    entries. ``fn`` must be a pure function of the key."""

    def __init__(self, fn: Callable[[_K], _V]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: _K) -> _V:
        value = self.fn(key)
        text = key[0] if isinstance(key, tuple) else key
        if text is None or len(text) <= RECURRING_TEXT_MAX:  # type: ignore[arg-type]
            if len(self) >= RECURRING_MAX:
                self.clear()
            self[key] = value
        return value


# ------------------------------------------------------------------ query strings
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _sensitive(key: str, words: frozenset[str]) -> bool:
    """Is this query key one to redact? ``access_token``, ``user[email]``, ``API-Key`` and
    ``accessToken`` are: keys are split into words on separators and on camelCase humps,
    as JavaScript front ends name them that way."""
    low = key.lower()
    if low in words:
        return True
    spaced = _CAMEL_HUMP.sub(" ", key).lower()
    for sep in "_-.[]":
        spaced = spaced.replace(sep, " ")
    parts = spaced.split()
    if any(part in words for part in parts):
        return True
    # "accessToken" -> "access token" also matches a configured "access_token".
    return len(parts) > 1 and "_".join(parts) in words


def redact_query(query: str, words: frozenset[str]) -> tuple[str, list[tuple[str, str]]]:
    """The query string with sensitive values replaced, and its decoded pairs (redacted).

    A split by hand rather than ``parse_qsl``: parameters that are not redacted keep their
    original encoding in the URL.
    """
    if not query:
        return "", []
    pairs: list[tuple[str, str]] = []
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote_plus(raw_key) if ("%" in raw_key or "+" in raw_key) else raw_key
        if SENSITIVE[key, words]:
            pairs.append((key, REDACTED))
            parts[i] = f"{raw_key}={_REDACTED_Q}"
            changed = True
        else:
            value = unquote_plus(raw_value) if ("%" in raw_value or "+" in raw_value) else raw_value
            pairs.append((key, value))
    return ("&".join([part for part in parts if part]) if changed else query), pairs


class ParsedQuery(NamedTuple):
    """What a page call needs from its query string (shared by every request with the same
    query: read only)."""

    search: str  # "?" + the redacted query, or ""
    pairs: tuple[tuple[str, str], ...]  # decoded, redacted
    campaign: dict[str, str]  # from the utm_* parameters


def parse_query(query: str, words: frozenset[str]) -> ParsedQuery:
    search, pairs = redact_query(query, words)
    pairs = [(printable(k), printable(v)) for k, v in pairs]  # decoded: "%0A" is a line feed
    campaign = {_CAMPAIGN[k]: v for k, v in pairs if k in _CAMPAIGN and v}
    return ParsedQuery("?" + search if search else "", tuple(pairs), campaign)


def redact_url(url: str, words: frozenset[str]) -> str:
    """A URL (the referrer) with sensitive query values replaced."""
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


def query_dict(pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Pairs as a dict; a repeated key's values become a list."""
    query: dict[str, Any] = {}
    for key, value in pairs:
        if key in query:
            previous = query[key]
            query[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            query[key] = value
    return query


# ------------------------------------------------------------------ ip, locale
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


def client_ip(
    remote_addr: str | None, forwarded_for: str | None, trusted: tuple[str, ...], anonymize: bool
) -> str | None:
    """The client address; X-Forwarded-For is believed only when the peer is a trusted proxy.

    Walking the list from the right and skipping trusted hops means a visitor cannot
    spoof their address by sending their own X-Forwarded-For.
    """
    if not trusted and not anonymize:
        return remote_addr or None  # the server's own peer address: nothing to parse
    peer = _ip(remote_addr)
    address = peer
    if peer is not None and trusted and forwarded_for:
        nets = NETWORKS[trusted]
        if any(peer in net for net in nets):
            for hop in reversed(forwarded_for.split(",")):
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
    # A language tag (BCP 47) is ASCII letters, digits and "-"; isalnum() alone would also
    # pass any Unicode letter from a mangled header.
    if (
        not tag
        or tag == "*"
        or len(tag) > 35
        or not tag.isascii()
        or not tag.replace("-", "").replace("_", "").isalnum()
    ):
        return None
    return tag


# ------------------------------------------------------------------ the caches
SENSITIVE: Recurring[tuple[str, frozenset[str]], bool] = Recurring(lambda key: _sensitive(*key))
PARSED_QUERIES: Recurring[tuple[str, frozenset[str]], ParsedQuery] = Recurring(lambda key: parse_query(*key))
REDACTED_URLS: Recurring[tuple[str, frozenset[str]], str] = Recurring(lambda key: redact_url(*key))
LOCALES: Recurring[str | None, str | None] = Recurring(locale)
NETWORKS: Recurring[tuple[str, ...], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = Recurring(
    _networks
)
CACHES = (SENSITIVE, PARSED_QUERIES, REDACTED_URLS, LOCALES, NETWORKS)


# ------------------------------------------------------------------ building
_NO_QUERY = ParsedQuery("", (), {})


def request_context(facts: RequestFacts | None, settings: Settings) -> dict[str, Any]:
    """A message's ``context``: library, and for a request its page, ip, userAgent, locale,
    campaign and consent. A new dict per message (BEFORE_SEND hooks may change it)."""
    if facts is None:
        return {"library": dict(LIBRARY)}
    words = settings.redact_words
    query = PARSED_QUERIES[facts.query, words] if facts.query else _NO_QUERY
    path = facts.path
    context: dict[str, Any] = {
        "library": dict(LIBRARY),
        "page": {
            "path": path,
            "url": f"{facts.scheme}://{facts.host}{path}{query.search}",
            "referrer": REDACTED_URLS[facts.referrer, words] if facts.referrer else "",
            "search": query.search,
        },
    }
    ip = facts.remote_addr
    if settings.trusted_proxies or settings.anonymize_ip:
        ip = client_ip(ip, facts.forwarded_for, settings.trusted_proxies, settings.anonymize_ip)
    if ip:
        context["ip"] = ip
    if facts.user_agent:
        context["userAgent"] = facts.user_agent
    loc = LOCALES[facts.accept_language] if facts.accept_language else None
    if loc:
        context["locale"] = loc
    if query.campaign:
        context["campaign"] = dict(query.campaign)
    if facts.consent is not None:
        context["consent"] = {"categoryPreferences": dict(facts.consent)}
    return context


def carried_facts(facts: RequestFacts, settings: Settings) -> dict[str, Any]:
    """The facts as a background job carries them, by field name (a worker of another
    release still reads them), with what the page call would redact already redacted: the
    query and referrer per REDACT_QUERY_PARAMS, the address resolved through
    TRUSTED_PROXIES and ANONYMIZE_IP. A job's payload sits in a broker, so nothing the page
    call would not send may travel in it. Built again from these, the facts give the same
    context (redacting twice changes nothing)."""
    words = settings.redact_words
    carried: dict[str, Any] = {field.name: getattr(facts, field.name) for field in dataclasses.fields(facts)}
    carried["query"] = redact_query(facts.query, words)[0] if facts.query else ""
    carried["referrer"] = REDACTED_URLS[facts.referrer, words] if facts.referrer else facts.referrer
    carried["remote_addr"] = client_ip(
        facts.remote_addr, facts.forwarded_for, settings.trusted_proxies, settings.anonymize_ip
    )
    carried["forwarded_for"] = None
    if facts.consent is not None:
        carried["consent"] = dict(facts.consent)
    return carried


_FACT_FIELDS = {field.name: field for field in dataclasses.fields(RequestFacts)}


def facts_from_carried(carried: Mapping[str, Any]) -> RequestFacts:
    """:func:`carried_facts`' dict made facts again; ValueError (naming the field, never its
    value) when it is not one: it came through a broker, from another process."""
    values: dict[str, Any] = {}
    for name, value in carried.items():
        if name not in _FACT_FIELDS:
            continue  # a field of a newer release: its context is not ours to build
        if name == "consent":
            if value is not None and not (
                isinstance(value, Mapping) and all(isinstance(v, bool) for v in value.values())
            ):
                raise ValueError("consent must be a mapping of booleans")
        elif value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        values[name] = value
    for name in ("method", "scheme", "host", "path"):
        if not isinstance(values.get(name), str):
            raise ValueError(f"{name} is missing")
    return RequestFacts(**values)


def page_properties(
    page: Mapping[str, Any], facts: RequestFacts, settings: Settings, status: int | None, title: str | None
) -> dict[str, Any]:
    """A request's automatic page call's properties: its ``context.page`` (``page``),
    the method, the response status, the title a view set, and the query when asked for."""
    props = dict(page)
    props["method"] = facts.method
    if status is not None:
        props["status"] = status
    if title:
        props["title"] = title
    if settings.include_query_params and facts.query:
        pairs = PARSED_QUERIES[facts.query, settings.redact_words].pairs
        if pairs:
            props["query"] = query_dict(pairs)
    return props
