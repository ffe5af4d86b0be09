"""The analytics.js (analytics-next) loader for templates, set up to share the server's id.

Two things make the browser and the server agree on one anonymousId:

- analytics-next keeps the id in several stores. Releases before ``getConsistent`` storage
  preferred localStorage, so a browser that once stored an id there kept it after the server
  set a cookie; current ones (1.84, tested in tests/test_browser.py) let the cookie win any
  disagreement. The loader passes ``storage: {stores: ["cookie", "localStorage", "memory"]}``
  so that the cookie (which the server reads and writes) wins in every release.
- analytics-next works out its CDN only from an ``https://`` script URL; any other CDN
  (a proxy, a self-hosted copy, a test server on 127.0.0.1) must be announced through
  ``analytics._cdn``, which the loader sets from ``SEGMENT_CDN_URL``.

First-party mode (``first_party=True``) moves the browser's calls onto the site: the load
options set the ``Segment.io`` integration's ``apiHost`` to ``<page's host><COLLECT_PREFIX>/v1``
and its ``protocol`` to the page's, worked out in the browser (``location``), so one page
served under several hosts or behind a TLS-terminating proxy posts to the host it was loaded
from. analytics-next lets load options override the CDN settings of an integration key by key
(``mergedOptions``), and sends its telemetry to the same ``apiHost``. With
``SERVE_ANALYTICS_JS`` the loader also sets ``analytics._cdn`` to the mount, so the bundle, its
chunks and the source's settings come from the site as well (:mod:`segment_middleware.assets`);
with no write key it then loads with :data:`~segment_middleware.assets.LOCAL_KEY`, and the
browser's calls go to the local store through the mount.

Every value that reaches the page goes through :func:`js_value` (JSON with ``<``, ``>``,
``&`` and the JS line separators escaped), so no setting or template argument can close the
``<script>`` element or inject code; the nonce is HTML-escaped into its attribute.

The server already sends one page call per request, so the loader does not call
``analytics.page()`` unless asked (``page=True``); otherwise every view would be counted twice.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from typing import Any

from .assets import LOCAL_KEY
from .settings import Settings

__all__ = ["SNIPPET_VERSION", "js_value", "render_snippet", "segment_snippet", "snippet_global"]

#: The version of Segment's published snippet this loader follows (analytics-next 5.x).
SNIPPET_VERSION = "5.2.1"

STORES = ("cookie", "localStorage", "memory")

_JS_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}

# Segment's published snippet (v5), with the key, CDN and load options as parameters. The
# stub queues calls made before the library arrives; analytics-next replays them.
_LOADER = (
    '!function(){var i="analytics",analytics=window[i]=window[i]||[];'
    "if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&"
    'console.error("Segment snippet included twice.");else{analytics.invoked=!0;'
    'analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview",'
    '"identify","reset","group","track","ready","alias","debug","page","screen","once",'
    '"off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId",'
    '"addDestinationMiddleware","register"];'
    "analytics.factory=function(e){return function(){if(window[i].initialized)"
    "return window[i][e].apply(window[i],arguments);var n=Array.prototype.slice.call(arguments);"
    'if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){'
    "var c=document.querySelector(\"link[rel='canonical']\");"
    'n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,'
    "u:location.href,s:location.search,t:document.title,r:document.referrer})}"
    "n.unshift(e);analytics.push(n);return analytics}};"
    "for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];"
    "analytics[key]=analytics.factory(key)}"
    'analytics.load=function(key,n){var t=document.createElement("script");'
    't.type="text/javascript";t.async=!0;t.setAttribute("data-global-segment-analytics-key",i);'
    't.src=analytics._cdn+"/analytics.js/v1/"+encodeURIComponent(key)+"/analytics.min.js";'
    'var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);'
    "analytics._loadOptions=n};"
    "analytics._writeKey=%(key)s;analytics._cdn=%(cdn)s;analytics.SNIPPET_VERSION=%(version)s;"
    "analytics.load(%(key)s,%(options)s);%(page)s}}();"
)


# The load options with the Segment.io integration's apiHost and protocol set from the page's
# own location (the rest of the integration's options, if given, are kept).
_FIRST_PARTY = (
    '(function(o,m){var i=o.integrations=o.integrations||{},s=i["Segment.io"];'
    's=i["Segment.io"]=s&&typeof s=="object"?s:{};'
    's.apiHost=location.host+m+"/v1";s.protocol=location.protocol.slice(0,-1);return o})(%s,%s)'
)


def js_value(value: Any) -> str:
    """``value`` as a JavaScript literal that is safe inside an HTML ``<script>`` element."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).translate(_JS_ESCAPES)


def render_snippet(
    settings: Settings,
    *,
    write_key: str | None = None,
    nonce: str | None = None,
    page: bool = False,
    load_options: Mapping[str, Any] | None = None,
    first_party: bool = False,
) -> str:
    """The ``<script>`` element, or an HTML comment when there is no key to load with.

    ``write_key`` overrides the settings' key (``BROWSER_WRITE_KEY``, else ``WRITE_KEY``);
    ``load_options`` are merged into analytics-next's ``load()`` options (ours set
    ``storage``). ``first_party`` points analytics.js at the site's collection mount.
    """
    key = write_key if write_key is not None else (settings.browser_write_key or settings.write_key)
    if not key and first_party and settings.serve_analytics_js:
        key = LOCAL_KEY  # the local store's own source, served and accepted by the mount
    if not key:
        return "<!-- segment_snippet: no write key, analytics.js not loaded -->"
    if not isinstance(key, str):
        raise TypeError(f"write_key must be a string, got {type(key).__name__}")
    options: dict[str, Any] = {"storage": {"stores": list(STORES)}}
    if load_options:
        options.update(load_options)
    mount = js_value("" if settings.collect_prefix == "/" else settings.collect_prefix)
    cdn = js_value(settings.cdn_url.rstrip("/"))
    if settings.serve_analytics_js:
        cdn = f'location.protocol+"//"+location.host+{mount}'
    body = _LOADER % {
        "key": js_value(key),
        "cdn": cdn,
        "version": js_value(SNIPPET_VERSION),
        "options": _FIRST_PARTY % (js_value(options), mount) if first_party else js_value(options),
        "page": "analytics.page();" if page else "",
    }
    attr = f' nonce="{html.escape(str(nonce), quote=True)}"' if nonce else ""
    return f"<script{attr}>{body}</script>"


def snippet_global(get_settings: Callable[[], Settings]) -> Callable[..., str]:
    """A Jinja global ``segment_snippet(nonce=..., write_key=..., page=..., first_party=...)``.

    Returns ``markupsafe.Markup`` (Jinja always brings markupsafe), so autoescaping leaves
    the element alone: every value in it went through :func:`js_value` or ``html.escape``.
    """
    from markupsafe import Markup

    def segment_snippet(
        *,
        write_key: str | None = None,
        nonce: str | None = None,
        page: bool = False,
        load_options: Mapping[str, Any] | None = None,
        first_party: bool = False,
    ) -> str:
        text = render_snippet(
            get_settings(),
            write_key=write_key,
            nonce=nonce,
            page=page,
            load_options=load_options,
            first_party=first_party,
        )
        return Markup(text)

    return segment_snippet


def _default_settings() -> Settings:
    from .ambient import runtime

    return runtime().settings


def segment_snippet(**kwargs: Any) -> str:
    """Jinja global for Starlette/FastAPI templates: ``templates.env.globals["segment_snippet"]``.

    Uses the settings code outside a request uses (``segment_middleware.ambient``: the one
    app configured in this process); Flask's extension installs a version bound to its own
    app instead.
    """
    return snippet_global(_default_settings)(**kwargs)
