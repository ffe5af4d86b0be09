"""The keyword arguments users pass, as types a type checker and an IDE can read.

``SettingsKeywords`` is the lowercase setting names (one key per row of
:class:`~segment_middleware.settings.Settings`, a test holds the two equal) with the types
each setting's check accepts, which are wider than what ``Settings`` stores (a list where
it keeps a tuple, a dotted path where it keeps a callable). The adapters take it as
``**settings: Unpack[SettingsKeywords]``, so mypy flags a misspelt keyword or a wrong type
in ``SegmentMiddleware(app, ...)``, ``app.add_middleware(SegmentMiddleware, ...)``,
``Segment(app, ...)``, ``SegmentWSGIMiddleware(app, ...)`` and ``configure(...)``, while
at run time they still receive a plain dict and validate it as before.

``CallOptions`` is the same for the options of the tracker's calls.

Only the standard library is imported here: ``Unpack`` comes from ``typing_extensions``
under ``TYPE_CHECKING`` where it is used (type checkers ship it; the package does not need
it installed).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Literal, TypedDict

__all__ = ["CallOptions", "SettingsKeywords"]


class SettingsKeywords(TypedDict, total=False):
    """Every setting as a keyword (all optional: the environment and defaults fill the rest).

    Use it to build the keywords once: ``kw: SettingsKeywords = {"write_key": key}``, then
    ``app.add_middleware(SegmentMiddleware, **kw)``.
    """

    write_key: str | None
    host: str
    exclude_paths: Iterable[str]
    page_methods: Iterable[str] | None
    anonymous_id_cookie: str
    anonymous_id_header: str
    set_cookie: bool
    cookie_domain: str | None
    cookie_max_age: int
    user_id: Callable[[Any], Any] | str | None  # request -> userId or None, or a dotted path
    should_track: Callable[[Any], bool] | str | None
    include_query_params: bool
    redact_query_params: Iterable[str]
    trusted_proxies: Iterable[str]
    anonymize_ip: bool
    honor_gpc: bool
    honor_dnt: bool
    consent: Callable[[Any], Mapping[str, bool]] | str | None
    identify_traits: Callable[[Any], Mapping[str, Any]] | str | None
    tracking_plan: str | os.PathLike[str] | None
    plan_violations: Literal["warn", "drop", "raise"]
    before_send: (
        Callable[[dict[str, Any]], dict[str, Any] | None]
        | str
        | Iterable[Callable[[dict[str, Any]], dict[str, Any] | None] | str]
        | None
    )
    integrations: Mapping[str, Any] | None
    flush_at: int
    flush_interval: float
    max_queue_size: int
    max_retries: int
    timeout: float
    gzip: bool
    shutdown_timeout: float
    spool: bool
    auto_replay: bool
    local_store: str
    cdn_url: str
    default_currency: str | None
    reset_on_logout: bool
    auth_events: bool
    alias_on_signup: bool
    max_in_flight: int
    spool_max_mb: float
    track_unmatched_routes: bool
    public_api_token: str | None
    public_api_host: str
    delete_on_user_delete: bool
    suppressed_users: Callable[[str], bool] | AbstractSet[str] | str | None
    local_store_retention_days: float | None
    source_secrets: Mapping[str, str | list[str] | tuple[str, ...]] | None
    collect_prefix: str
    browser_write_key: str | None
    allowed_origins: Iterable[str]
    collect_rate_limit: str | None  # "20/s", "600/m burst 100"; None: no limit
    event_categories: Mapping[str, str | list[str] | tuple[str, ...]]
    page_category: str | list[str] | tuple[str, ...] | None
    space_id: str | None
    profiles_token: str | None
    profiles_host: str
    profile_timeout: float
    profile_cache_ttl: float
    serve_analytics_js: bool
    analytics_js_dir: str | os.PathLike[str] | None
    analytics_js_settings: str | os.PathLike[str] | None
    analytics_js_cache_ttl: float
    collect_ip_rate_limit: str | None  # "10x" the visitor's limit, "200/s burst 2000"; None: no limit


class CallOptions(TypedDict, total=False):
    """The options every tracker call takes besides its own arguments (the Segment Spec's
    common fields); ``None`` is the same as leaving one out."""

    # merged into the message's context (the request's own context is filled in too)
    context: Mapping[str, Any] | None
    # which destinations get it, {"All": False, "Mixpanel": True}, over INTEGRATIONS
    integrations: Mapping[str, Any] | None
    # when it happened, for events recorded after the fact (a naive datetime is UTC)
    timestamp: datetime.datetime | None
    # your own messageId, which Segment de-duplicates on (default: a new one)
    message_id: str | None
