"""Django's debug page and error reports without the package's secrets.

Django's own ``SafeExceptionReporterFilter`` already masks most of ``settings.SEGMENT``: it
walks a dict setting key by key and masks every key matching
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE`` (``WRITE_KEY``, ``BROWSER_WRITE_KEY``,
``PUBLIC_API_TOKEN``, ``PROFILES_TOKEN``, the whole of ``SOURCE_SECRETS``;
``tests/test_hardening.py`` renders a real debug page to hold it to that). What it shows in
clear: a user name and password in a ``HOST`` URL (``https://user:pass@proxy.example``,
which the sender turns into Basic auth), and a ``SEGMENT`` that is a mapping but not a
``dict`` (shown by its repr, secrets and all). This filter masks those too::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "segment_middleware.django.debug.SegmentExceptionReporterFilter"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.views.debug import SafeExceptionReporterFilter

from ..settings import SECRET_SETTINGS

__all__ = ["SegmentExceptionReporterFilter", "mask_url_credentials"]

_SECRET_KEYS = frozenset(name.upper() for name in SECRET_SETTINGS)


def mask_url_credentials(url: str, substitute: str) -> str:
    """``url`` with the password of its user-info replaced (``https://user:***@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return substitute  # not a URL we can read: nothing of it is shown
    if "@" not in parts.netloc:
        return url
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    netloc = f"{user}:{substitute}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


class SegmentExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, and besides it: in ``settings.SEGMENT`` (any mapping) every secret
    setting and the credentials in every ``*HOST`` URL are masked."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        if key == "SEGMENT" and isinstance(value, Mapping):
            return {k: self._cleanse_segment(k, v) for k, v in value.items()}
        return super().cleanse_setting(key, value)

    def _cleanse_segment(self, key: Any, value: Any) -> Any:
        name = key.upper() if isinstance(key, str) else key
        if name in _SECRET_KEYS:
            return self.cleansed_substitute
        if isinstance(name, str) and name.endswith("HOST") and isinstance(value, str):
            return mask_url_credentials(value, self.cleansed_substitute)
        return super().cleanse_setting(key, value)
