"""Request facts, and the Segment ``context``/page properties built from them.

Adapters copy a handful of raw strings out of their request into :class:`RequestFacts`
(cheap: a few dict lookups). Everything that costs anything - URL assembly, query parsing
and redaction, campaign, locale, proxy-aware IP - happens later, on the sender thread, so
a request pays for none of it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from ._fastjson import dumps, js
from .version import LIBRARY

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "RequestFacts",
    "auto_page_json",
    "build_context",
    "context_json",
    "page_properties",
    "page_properties_json",
]

REDACTED = "[REDACTED]"
_REDACTED_Q = quote(REDACTED)
_LIBRARY_JSON = dumps(LIBRARY)

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
    """What one request's messages share: the redacted page facts, the context parts, and
    (made on first use, once per request) the dicts for the hook path and the JSON text
    for the fast path."""

    __slots__ = (
        "_context",
        "_context_json",
        "_page",
        "_page_json",
        "_query",
        "campaign",
        "campaign_json",
        "consent",
        "ip",
        "locale",
        "origin",
        "pairs",
        "path",
        "referrer",
        "search",
        "search_json",
        "url",
        "user_agent",
    )

    def __init__(
        self,
        path: str,
        origin: str,
        url: str,
        referrer: str,
        search: str,
        search_json: str,
        ip: str | None,
        user_agent: str | None,
        loc: str | None,
        campaign: dict[str, str],
        campaign_json: str,
        consent: dict[str, Any] | None,
        pairs: tuple[tuple[str, str], ...],
    ) -> None:
        self.path = path
        self.origin = origin  # scheme://host
        self.url = url
        self.referrer = referrer
        self.search = search
        self.search_json = search_json
        self.ip = ip
        self.user_agent = user_agent
        self.locale = loc
        self.campaign = campaign  # shared by requests with the same query: read only
        self.campaign_json = campaign_json
        self.consent = consent
        self.pairs = pairs
        self._page: dict[str, Any] | None = None
        self._context: dict[str, Any] | None = None
        self._query: dict[str, Any] | None = None
        self._page_json: str | None = None
        self._context_json: str | None = None

    # ---------------------------------------------------------------- as dicts
    @property
    def page(self) -> dict[str, Any]:
        page = self._page
        if page is None:
            page = self._page = {
                "path": self.path,
                "url": self.url,
                "referrer": self.referrer,
                "search": self.search,
            }
        return page

    @property
    def context(self) -> dict[str, Any]:
        context = self._context
        if context is None:
            context = {"library": LIBRARY, "page": self.page}
            if self.ip:
                context["ip"] = self.ip
            if self.user_agent:
                context["userAgent"] = self.user_agent
            if self.locale:
                context["locale"] = self.locale
            if self.campaign:
                context["campaign"] = dict(self.campaign)
            if self.consent is not None:
                context["consent"] = self.consent
            self._context = context
        return context

    @property
    def query(self) -> dict[str, Any]:
        query = self._query
        if query is None:
            query = {}
            for key, value in self.pairs:
                if key in query:
                    previous = query[key]
                    query[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
                else:
                    query[key] = value
            self._query = query
        return query

    # ---------------------------------------------------------------- as JSON text
    @property
    def page_json(self) -> str:
        """The members of ``page`` without braces: ``"path":...,"search":...``."""
        text = self._page_json
        if text is None:
            text = self._page_json = _page_members(
                self.path, self.origin, self.url, self.referrer, self.search_json
            )
        return text

    @property
    def context_json(self) -> str:
        """``dumps(self.context)``, assembled from the parts."""
        text = self._context_json
        if text is None:
            text = self._context_json = _context_text(
                self.page_json, self.ip, self.user_agent, self.locale, self.campaign_json, self.consent
            )
        return text


def _page_members(path: str, origin: str, url: str, referrer: str, search_json: str) -> str:
    """The members of the page dict as JSON, without braces: ``"path":...,"search":...``.
    The recurring-value cache is read inline (a helper call costs about as much as the
    lookup): this runs for every tracked request."""
    recurring = _recurring
    if type(origin) is str and type(path) is str:
        path_text = recurring.get(path) or _recurring_js(path)
        # JSON escaping works character by character, so the url's text is its parts'
        # texts joined: the long query is escaped once (and cached with it).
        url_text = (recurring.get(origin) or _recurring_js(origin))[:-1] + path_text[1:-1] + search_json[1:]
    else:
        path_text = js(path)
        url_text = js(url)
    referrer_text = (recurring.get(referrer) or _recurring_js(referrer)) if referrer else '""'
    return f'"path":{path_text},"url":{url_text},"referrer":{referrer_text},"search":{search_json}'


def _context_text(
    page_members: str,
    ip: str | None,
    user_agent: str | None,
    loc: str | None,
    campaign_json: str,
    consent: dict[str, Any] | None,
) -> str:
    """``dumps`` of the request's context, assembled from its parts' JSON."""
    parts = ['{"library":', _LIBRARY_JSON, ',"page":{', page_members, "}"]
    if ip:
        parts += (',"ip":', js(ip))
    if user_agent:
        parts += (',"userAgent":', _recurring.get(user_agent) or _recurring_js(user_agent))
    if loc:
        parts += (',"locale":', js(loc))
    if campaign_json:
        parts += (',"campaign":', campaign_json)
    if consent is not None:
        parts += (',"consent":', dumps(consent))
    parts.append("}")
    return "".join(parts)


# ------------------------------------------------------------------ helpers
_RECURRING_MAX = 1024
_CACHED_TEXT_MAX = 512  # longer values are never cached (memory stays bounded)
_recurring: dict[str, str] = {}


def _recurring_js(value: str | None) -> str:
    """``js(value)`` for values that recur across requests (user agents, referrers): the
    escaped text of the last ~1000 distinct ones is kept."""
    if value is None:
        return "null"
    text = _recurring.get(value)
    if text is None:
        text = js(value)
        if len(value) <= _CACHED_TEXT_MAX:  # bounded memory: ~1000 x 512 characters at most
            if len(_recurring) >= _RECURRING_MAX:
                _recurring.clear()
            _recurring[value] = text
    return text


def _sensitive(key: str, words: frozenset[str]) -> bool:
    """Is this query key one to redact? ``access_token``, ``user[email]``, ``API-Key`` and
    ``accessToken`` are: keys are split into words on separators and on camelCase humps,
    as JavaScript front ends name them that way. Verdicts are cached per key."""
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


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


_VERDICTS_MAX = 4096  # distinct query keys remembered per REDACT_QUERY_PARAMS
_verdicts: dict[frozenset[str], dict[str, bool]] = {}


def _verdicts_for(words: frozenset[str]) -> dict[str, bool]:
    verdicts = _verdicts.get(words)
    if verdicts is None:
        if len(_verdicts) >= 8:
            _verdicts.clear()
        verdicts = _verdicts[words] = {}
    return verdicts


def redact_query(query: str, words: frozenset[str]) -> tuple[str, list[tuple[str, str]]]:
    """The query string with sensitive values replaced, and its decoded pairs (redacted).

    A hand-rolled split rather than ``parse_qsl``: this runs for every page call, most
    parameters need no decoding, and untouched parameters keep their original encoding.
    """
    if not query:
        return "", []
    verdicts = _verdicts_for(words)
    pairs: list[tuple[str, str]] = []
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote_plus(raw_key) if ("%" in raw_key or "+" in raw_key) else raw_key
        sensitive = verdicts.get(key)
        if sensitive is None:
            sensitive = _sensitive(key, words)
            if len(verdicts) < _VERDICTS_MAX:
                verdicts[key] = sensitive
        if sensitive:
            pairs.append((key, REDACTED))
            parts[i] = f"{raw_key}={_REDACTED_Q}"
            changed = True
        else:
            value = unquote_plus(raw_value) if ("%" in raw_value or "+" in raw_value) else raw_value
            pairs.append((key, value))
    return ("&".join([part for part in parts if part]) if changed else query), pairs


def redact_url(url: str | None, words: frozenset[str]) -> str:
    """A URL (the referrer) with sensitive query values replaced; cached, as the same
    referrers come back again and again."""
    if url and len(url) <= _CACHED_TEXT_MAX:
        return _redact_url_cached(url, words)
    return _redact_url(url, words)


def _redact_url(url: str | None, words: frozenset[str]) -> str:
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


_redact_url_cached = functools.lru_cache(maxsize=1024)(_redact_url)


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
        nets = _networks(trusted)
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


@functools.lru_cache(maxsize=256)
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


# ------------------------------------------------------------------ building
# Query strings recur (campaign links, pagination): the redacted search and decoded pairs
# are a pure function of (query, words), so they are kept for the next request.
_PARSED_MAX = 1024
# search, its JSON, the decoded pairs, campaign, its JSON
_Parsed = tuple[str, str, tuple[tuple[str, str], ...], dict[str, str], str]
_parsed_queries: dict[tuple[str, frozenset[str]], _Parsed] = {}
_NO_CAMPAIGN: dict[str, str] = {}


_NOTHING_PARSED: _Parsed = ("", '""', (), _NO_CAMPAIGN, "")


def _parsed(query: str, words: frozenset[str]) -> _Parsed:
    """The query's redacted search (and its JSON), decoded pairs and campaign (and its JSON)."""
    if not query:
        return _NOTHING_PARSED
    key = (query, words)
    parsed = _parsed_queries.get(key)
    if parsed is None:
        search_qs, pair_list = redact_query(query, words)
        campaign = {_CAMPAIGN[k]: v for k, v in pair_list if k in _CAMPAIGN and v}
        search = "?" + search_qs if search_qs else ""
        parsed = (search, js(search), tuple(pair_list), campaign, dumps(campaign) if campaign else "")
        if len(query) <= _CACHED_TEXT_MAX:
            if len(_parsed_queries) >= _PARSED_MAX:
                _parsed_queries.clear()
            _parsed_queries[key] = parsed
    return parsed


def build(facts: RequestFacts, settings: Settings) -> _Built:
    """Derive (once per request) the context and page facts shared by its messages."""
    built = facts.built
    if built is not None:
        return built
    words = _redact_words(settings.redact_query_params)
    search, search_json, pairs, campaign, campaign_json = _parsed(facts.query, words)
    path = facts.path
    origin = f"{facts.scheme}://{facts.host}"
    url = f"{origin}{path}{search}"
    referrer = redact_url(facts.referrer, words) if facts.referrer else ""
    ip = client_ip(facts.remote_addr, facts.forwarded_for, settings.trusted_proxies, settings.anonymize_ip)
    loc = locale(facts.accept_language) if facts.accept_language else None
    consent = {"categoryPreferences": dict(facts.consent)} if facts.consent is not None else None
    built = facts.built = _Built(
        path,
        origin,
        url,
        referrer,
        search,
        search_json,
        ip,
        facts.user_agent,
        loc,
        campaign,
        campaign_json,
        consent,
        pairs,
    )
    return built


_words_by_id: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {}


def _redact_words(words: tuple[str, ...]) -> frozenset[str]:
    """REDACT_QUERY_PARAMS as a set, looked up by the identity of the settings' tuple
    (hashing a tuple of ~20 words on every request costs more than the lookup)."""
    entry = _words_by_id.get(id(words))
    if entry is None or entry[0] is not words:
        if len(_words_by_id) >= 32:
            _words_by_id.clear()
        entry = _words_by_id[id(words)] = (words, frozenset(words))
    return entry[1]


def build_context(facts: RequestFacts | None, settings: Settings) -> dict[str, Any]:
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
    facts: RequestFacts, settings: Settings, status: int | None, title: str | None
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


def page_properties_json(
    facts: RequestFacts, settings: Settings, status: int | None, title: str | None
) -> str:
    """``dumps(page_properties(...))``, assembled from the request's cached JSON parts."""
    built = build(facts, settings)
    parts = ["{", built.page_json, ',"method":', js(facts.method)]
    if status is not None:
        parts += (',"status":', str(status) if type(status) is int else dumps(status))
    if title:
        parts += (',"title":', js(title))
    if settings.include_query_params and built.pairs:
        parts += (',"query":', dumps(built.query))
    parts.append("}")
    return "".join(parts)


def auto_page_json(
    head: str,
    tail: str,
    settings: Settings,
    status: int | None,
    title: str | None,
    method: str,
    scheme: str,
    host: str,
    path: str,
    query: str,
    referrer: str | None,
    user_agent: str | None,
    accept_language: str | None,
    remote_addr: str | None,
    forwarded_for: str | None,
) -> str | None:
    """A request's automatic page call as JSON text, from the request's raw facts:
    ``head`` (the message's own members, opening brace included), ``properties``,
    ``context``, then ``tail`` (its remaining members, closing brace included). None when
    the path is not a string (the dict path then reports it).

    For the page call that is a request's only message (``messages.page_item``): nothing
    else shares the derived parts, so they go straight into the text, without the
    per-request ``_Built`` object and its dicts. The same JSON as
    :func:`page_properties_json` and :func:`context_json` (``tests/test_wire_equivalence.py``),
    from the same two helpers that assemble the page members and the context text.
    """
    if type(path) is not str:
        return None
    recurring = _recurring
    words = _redact_words(settings.redact_query_params)
    if query:
        _, search_json, _, _, campaign_json = _parsed(query, words)
    else:
        search_json, campaign_json = '""', ""
    referrer = redact_url(referrer, words) if referrer else ""
    page = _page_members(path, f"{scheme}://{host}", "", referrer, search_json)
    parts = [head, ',"properties":{', page, ',"method":', recurring.get(method) or _recurring_js(method)]
    if status is not None:
        parts += (',"status":', str(status) if type(status) is int else dumps(status))
    if title:
        parts += (',"title":', js(title))
    if settings.trusted_proxies or settings.anonymize_ip:
        ip = client_ip(remote_addr, forwarded_for, settings.trusted_proxies, settings.anonymize_ip)
    else:
        ip = remote_addr
    loc = locale(accept_language) if accept_language else None
    parts += ('},"context":', _context_text(page, ip, user_agent, loc, campaign_json, None))
    parts.append(tail)
    return "".join(parts)


def context_json(facts: RequestFacts | None, settings: Settings) -> str:
    """``dumps(build_context(facts, settings))`` without building the dict."""
    if facts is None:
        return _LIBRARY_CONTEXT_JSON
    return build(facts, settings).context_json


_LIBRARY_CONTEXT_JSON = '{"library":' + _LIBRARY_JSON + "}"
