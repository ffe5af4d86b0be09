"""SERVE_ANALYTICS_JS: the collection mount serves analytics.js and its settings itself.

With the snippet's ``first_party=True`` analytics.js posts its events to the site; this
module removes the last other host a page talks to, Segment's CDN. Routes under the mount
(GET or HEAD), the paths analytics-next asks its CDN for once the snippet sets
``analytics._cdn`` to ``<site><COLLECT_PREFIX>``:

- ``analytics.js/v1/<key>/analytics.min.js``: the bundle;
- ``analytics-next/bundles/<chunk>.js``: the chunks it loads on demand (their names carry a
  content hash, so they never change);
- ``v1/projects/<key>/settings``: the source's settings (its destinations, its
  ``Segment.io`` options);
- ``next-integrations/<path>``: device-mode destination bundles, fetched from the CDN.

Nothing else is fetched: a chunk must be one whose hash the bundle names, a destination one
the source's settings list (remote plugins, classic destinations' folders), so a made-up
path costs a 404, not a request to the CDN.

Where each comes from: ``ANALYTICS_JS_DIR`` (the npm package's ``dist/umd``, or a copy of the
CDN's files) and ``ANALYTICS_JS_SETTINGS`` (a JSON file) when set; else ``CDN_URL``, fetched
on the first request and kept ``ANALYTICS_JS_CACHE_TTL`` seconds in memory and in the
``cdn-cache`` folder next to ``LOCAL_STORE`` (shared by a server's workers, and what a
restart without network serves). When the CDN cannot be reached the last copy is served;
the settings of a source with no copy at all, and of the local store (no write key), are a
minimal source whose only destination is ``Segment.io``, which the snippet points at the
mount.

Only the site's own key is served (``BROWSER_WRITE_KEY``, else ``WRITE_KEY``, else
:data:`LOCAL_KEY`): the mount is not a proxy for anyone's source.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from .logs import hide_in_logs

if TYPE_CHECKING:
    from .core import Runtime
    from .settings import Settings

__all__ = ["LOCAL_KEY", "Asset", "AssetRoute", "Assets", "asset_route", "browser_key", "minimal_settings"]

log = logging.getLogger("segment_middleware")

#: The key the snippet loads analytics.js with when the site has no write key (events go to
#: the local store through the mount, which then accepts any key).
LOCAL_KEY = "local-store"

JS = "application/javascript; charset=utf-8"
JSON = "application/json"
FETCH_TIMEOUT = 5.0  # seconds; a CDN slower than this is treated as down
MAX_ASSET_BYTES = 8 * 1024 * 1024  # analytics.min.js is about 100 KB; nothing of ours is near this
RETRY_AFTER_FAILURE = 30.0  # seconds before a failed fetch with no copy to serve is tried again
_MAX_KEPT = 64  # assets kept in memory (the bundle, settings, a dozen chunks, a few destinations)
_SHORT = "public, max-age=60"  # the bundle and settings may change: browsers ask again soon
_FOREVER = "public, max-age=31536000, immutable"  # content-hashed names

_ROUTE = re.compile(
    r"^(?:analytics\.js/v1/(?P<bundle>[^/]{1,256})/analytics\.min\.js"
    r"|analytics-next/bundles/(?P<chunk>[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.js(?:\.map)?)"
    r"|v1/projects/(?P<settings>[^/]{1,256})/settings"
    r"|next-integrations/(?P<integration>(?:[A-Za-z0-9_@][A-Za-z0-9_.@-]{0,200}/){0,6}"
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.js(?:\.map|\.gz)?))$"
)


# A chunk's name carries the content hash the bundle's loader knows it by.
_CHUNK = re.compile(r"^[A-Za-z0-9_-]+\.bundle\.([0-9a-f]{8,64})\.js(?:\.map)?$")


class AssetRoute(NamedTuple):
    """A route under the mount that names an asset: its kind and the part after the kind."""

    kind: str  # "bundle", "chunk", "settings", "integration"
    name: str  # the key, or the file's path under its folder


def asset_route(route: str) -> AssetRoute | None:
    """The asset ``route`` names (the path under the mount, no leading ``/``), else None."""
    match = _ROUTE.match(route)
    if match is None:
        return None
    kind = match.lastgroup
    assert kind is not None
    return AssetRoute(kind, match[kind])


class Asset(NamedTuple):
    """What the adapter answers: status, media type, bytes, extra headers."""

    status: int
    media_type: str
    body: bytes
    headers: list[tuple[str, str]]


def browser_key(settings: Settings) -> str:
    """The key the snippet loads analytics.js with and the mount serves: BROWSER_WRITE_KEY,
    else WRITE_KEY, else :data:`LOCAL_KEY` (local store)."""
    return settings.browser_write_key or settings.write_key or LOCAL_KEY


def minimal_settings(key: str, site: str | None = None) -> dict[str, Any]:
    """Source settings with one destination, ``Segment.io`` (what analytics-next needs to
    run): no device-mode destinations, no remote plugins, no telemetry. Its events go to
    Segment's API, or to the mount at ``site`` (``https://shop.example/segment``) when given."""
    api = {"apiHost": "api.segment.io/v1", "protocol": "https"}
    if site is not None:
        scheme, _, rest = site.partition("://")
        api = {"apiHost": f"{rest}/v1", "protocol": scheme}
    return {
        "integrations": {"Segment.io": {"apiKey": key, **api}},
        "plan": {"track": {"__default": {"enabled": True}}},
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "metrics": {"sampleRate": 0},
    }


Fetch = Callable[[str], bytes]


def fetch_url(url: str) -> bytes:
    """GET ``url`` with requests (the SDK's own HTTP library: proxies, CA bundle and
    ``NO_PROXY`` from the environment). Raises on anything but a 200 or an oversized body."""
    import requests

    with requests.get(url, timeout=FETCH_TIMEOUT, stream=True) as response:
        if response.status_code != 200:
            raise OSError(f"{response.status_code} from the CDN")
        body = response.raw.read(MAX_ASSET_BYTES + 1, decode_content=True)
    if len(body) > MAX_ASSET_BYTES:
        raise OSError("the CDN's answer is too large")
    return bytes(body)


class _Kept(NamedTuple):
    body: bytes
    at: float  # when it was fetched (time.time())


class Assets:
    """One runtime's assets: where each comes from, and the copies kept of what was fetched.

    Thread-safe; each URL is fetched by one thread at a time (the others wait for its
    answer instead of asking the CDN again)."""

    def __init__(
        self,
        settings: Settings,
        *,
        fetch: Fetch = fetch_url,
        clock: Callable[[], float] = time.time,
        cache_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        hide_in_logs(settings)  # its log lines quote CDN paths, which hold the browser key
        self.key = browser_key(settings)
        self._fetch = fetch
        self._clock = clock
        self._dir = Path(settings.analytics_js_dir) if settings.analytics_js_dir else None
        self._cache_dir = (
            cache_dir if cache_dir is not None else Path(settings.local_store).resolve().parent / "cdn-cache"
        )
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self._warned: set[str] = set()
        self._failed: dict[str, float] = {}  # path -> when its fetch last failed
        self._plugins: set[str] = set()  # next-integrations/ paths the served settings name
        self._classic: tuple[str, ...] = ()  # and the folders of their classic destinations

    # ------------------------------------------------------------------ the routes
    def serve(self, route: AssetRoute, method: str, site: str) -> Asset:
        """Answer one asset request; ``site`` is the mount's own absolute URL
        (``https://shop.example/segment``), for the settings' links. Never raises for what
        the network does: a missing asset is 404, an unreachable CDN with no copy 502."""
        if method not in ("GET", "HEAD"):
            return _error(405, "GET only")
        if route.kind in ("bundle", "settings") and not _same_key(route.name, self.key):
            return _error(404, "not this site's source")
        if route.kind == "bundle":
            return self._bundle()
        if route.kind == "settings":
            return self._settings(site)
        # Only what the bundle and the settings name is fetched: the mount is no open door
        # to the CDN for made-up paths.
        if route.kind == "chunk":
            known = _CHUNK.match(route.name)
            bundle = self._bundle()
            if bundle.status != 200:
                return bundle
            if known is None or known[1].encode() not in bundle.body:
                return _error(404, "not a chunk of this analytics.js")
            local = (f"analytics-next/bundles/{route.name}", route.name)  # a CDN mirror, npm's dist/umd
            return self._file(local, f"analytics-next/bundles/{route.name}", _FOREVER)
        if not self._named(route.name):
            self._settings(site)  # another worker served the settings: learn what they name
            if not self._named(route.name):
                return _error(404, "not a destination of this source's settings")
        return self._file((), f"next-integrations/{route.name}", _SHORT)

    def _bundle(self) -> Asset:
        local = ("analytics.min.js", "standalone.js")  # the CDN's name, the npm package's
        return self._file(local, f"analytics.js/v1/{self.key}/analytics.min.js", _SHORT)

    def _file(self, local: tuple[str, ...], path: str, cache: str) -> Asset:
        """From ANALYTICS_JS_DIR when set and ``local`` names the file there, else the CDN."""
        kind = JSON if path.endswith(".map") else JS
        if self._dir is not None and local:
            for candidate in local:
                found = self._dir / candidate
                if found.is_file():
                    return Asset(200, kind, found.read_bytes(), [("Cache-Control", cache)])
            return _error(404, "not in ANALYTICS_JS_DIR")
        body = self._cdn(path, immutable=cache == _FOREVER)
        if body is None:
            return _error(502, "the CDN cannot be reached and no copy is kept")
        return Asset(200, kind, body, [("Cache-Control", cache)])

    def _settings(self, site: str) -> Asset:
        s = self.settings
        parsed: Any = None
        if s.analytics_js_settings:
            try:
                parsed = orjson.loads(Path(s.analytics_js_settings).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                self._warn_once(
                    "file", "segment: ANALYTICS_JS_SETTINGS cannot be read now; serving minimal settings"
                )
        elif s.write_key or s.browser_write_key:
            raw = self._cdn(f"v1/projects/{self.key}/settings", False)
            if raw is not None:
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    parsed = None
            if parsed is None:
                self._warn_once(
                    "cdn",
                    "segment: the source's settings cannot be fetched from CDN_URL and no copy is kept; "
                    "serving minimal settings (Segment.io only, no device-mode destinations)",
                )
        if not isinstance(parsed, dict):
            # The local store's source exists nowhere but here: its events go to the mount.
            parsed = minimal_settings(self.key, None if s.write_key or s.browser_write_key else site)
        body = orjson.dumps(self._localize(parsed, site))
        return Asset(200, JSON, body, [("Cache-Control", _SHORT)])

    def _named(self, path: str) -> bool:
        """``next-integrations/<path>`` is code of a destination the settings name."""
        return path in self._plugins or path.startswith(self._classic)

    def _localize(self, settings: dict[str, Any], site: str) -> dict[str, Any]:
        """Remote plugins (action destinations) are listed with absolute CDN URLs: point
        those at the mount, which fetches them from the CDN in turn. Classic device-mode
        destinations load from ``<cdn>/next-integrations/integrations/<name>/...``, the
        name as analytics-next's loader spells it (``normalizeName``, or its base64 when
        ``obfuscate`` is on): those folders are allowed.

        The settings always list ``Segment.io``: analytics-next lets the snippet's load
        options (first-party ``apiHost``) override only the integrations the settings name
        (``mergedOptions``), and without the entry its Segment.io plugin would still post
        to ``api.segment.io``."""
        integrations = settings.get("integrations")
        if not isinstance(integrations, dict):
            integrations = settings["integrations"] = {}
        if "Segment.io" not in integrations:
            integrations["Segment.io"] = {"apiKey": self.key}
        names = [_classic_name(str(name)) for name in integrations if name != "Segment.io"]
        obfuscated = [base64.b64encode(n.encode("utf-8")).decode().replace("=", "") for n in names]
        self._classic = tuple(f"integrations/{n}/" for n in names + obfuscated)
        cdn = self.settings.cdn_url.rstrip("/") + "/next-integrations/"
        plugins = settings.get("remotePlugins")
        if isinstance(plugins, list):
            for plugin in plugins:
                url = plugin.get("url") if isinstance(plugin, dict) else None
                if isinstance(url, str) and url.startswith(cdn):
                    name = url[len(cdn) :]
                    if len(self._plugins) >= _MAX_KEPT:
                        self._plugins.clear()
                    self._plugins.add(name)
                    plugin["url"] = f"{site}/next-integrations/{name}"
        return settings

    # ------------------------------------------------------------------ the CDN and its copies
    def _cdn(self, path: str, immutable: bool) -> bytes | None:
        """``CDN_URL/path``: a fresh copy kept in memory or on disk, else fetched; when the
        fetch fails, the last copy (however old), else None."""
        now = self._clock()
        ttl = self.settings.analytics_js_cache_ttl
        with self._lock:
            kept = self._kept.get(path)
        if kept is not None and (immutable or now - kept.at < ttl):
            return kept.body
        with self._lock:
            gate = self._fetching.setdefault(path, threading.Lock())
        with gate:
            with self._lock:
                kept = self._kept.get(path)
            if kept is not None and (immutable or self._clock() - kept.at < ttl):
                return kept.body  # another thread fetched it while this one waited
            disk = self._read_disk(path)
            if disk is not None and (immutable or self._clock() - disk.at < ttl):
                self._keep(path, disk)
                return disk.body
            stale = kept or disk
            failed = self._failed.get(path)
            if failed is not None and self._clock() - failed < RETRY_AFTER_FAILURE:
                # the CDN just failed: a page's requests do not each wait FETCH_TIMEOUT
                return stale.body if stale is not None else None
            url = f"{self.settings.cdn_url.rstrip('/')}/{path}"
            try:
                body = self._fetch(url)
            except Exception as exc:  # the network, a 404, a proxy: never into the view
                if len(self._failed) >= _MAX_KEPT:
                    self._failed.clear()
                self._failed[path] = self._clock()
                self._warn_once(
                    path,
                    f"segment: cannot fetch {path} from CDN_URL ({exc.__class__.__name__}); "
                    + ("serving the last copy" if stale else "no copy to serve"),
                )
                return stale.body if stale is not None else None
            fresh = _Kept(body, self._clock())
            self._keep(path, fresh)
            self._write_disk(path, fresh)
            self._warned.discard(path)
            self._failed.pop(path, None)
            return body

    def _keep(self, path: str, kept: _Kept) -> None:
        with self._lock:
            self._kept[path] = kept
            self._kept.move_to_end(path)
            while len(self._kept) > _MAX_KEPT:
                self._kept.popitem(last=False)

    def _disk_path(self, path: str) -> Path:
        # One file per CDN URL; the name is a hash, so no path from a request reaches the disk.
        url = f"{self.settings.cdn_url.rstrip('/')}/{path}"
        return self._cache_dir / hashlib.sha256(url.encode()).hexdigest()[:40]

    def _read_disk(self, path: str) -> _Kept | None:
        file = self._disk_path(path)
        try:
            return _Kept(file.read_bytes(), file.stat().st_mtime)
        except OSError:
            return None

    def _write_disk(self, path: str, kept: _Kept) -> None:
        """Atomically (a temporary file renamed): another worker reads the old copy or the
        new one, never half of one; its mtime is when it was fetched. A folder that cannot
        be written only costs the copy."""
        tmp = None
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._cache_dir, prefix=".tmp-")
            with os.fdopen(fd, "wb") as file:
                file.write(kept.body)
            os.utime(tmp, (kept.at, kept.at))
            os.replace(tmp, self._disk_path(path))
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._warn_once(
                "disk", f"segment: cannot keep a copy of analytics.js in {self._cache_dir} ({exc})"
            )

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)


def _classic_name(name: str) -> str:
    """analytics-next's ``normalizeName``: lower case, the first ``.`` dropped, each run of
    white space one ``-`` (``"Google Analytics"`` -> ``google-analytics``)."""
    return re.sub(r"\s+", "-", name.lower().replace(".", "", 1))


def _same_key(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _error(status: int, text: str) -> Asset:
    return Asset(
        status, JSON, orjson.dumps({"success": False, "error": text}), [("Cache-Control", "no-store")]
    )


_per_runtime: weakref.WeakKeyDictionary[Runtime, Assets] = weakref.WeakKeyDictionary()
_per_runtime_lock = threading.Lock()


def for_runtime(runtime: Runtime) -> Assets:
    """The runtime's :class:`Assets`, made on its first asset request."""
    with _per_runtime_lock:
        found = _per_runtime.get(runtime)
        if found is None:
            found = _per_runtime[runtime] = Assets(runtime.settings)
        return found
