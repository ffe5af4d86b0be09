"""``{% load segment_tags %}{% segment_snippet %}``: the analytics.js loader in a template.

Keyword arguments are those of :func:`segment_middleware.snippet.render_snippet`
(``nonce``, ``write_key``, ``page``, ``load_options``, ``first_party``):
``{% segment_snippet first_party=True %}`` sends the browser's calls through the site's
collection mount. Without an explicit ``nonce`` the tag uses
``request.csp_nonce`` when django-csp (or anything else) put one there.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from ...snippet import render_snippet
from ..conf import get_runtime

register = template.Library()


@register.simple_tag(takes_context=True)
def segment_snippet(context: template.Context, **kwargs: Any) -> SafeString:
    if "nonce" not in kwargs:
        request = context.get("request")
        nonce = getattr(request, "csp_nonce", None) if request is not None else None
        if nonce:
            kwargs["nonce"] = str(nonce)
    return mark_safe(render_snippet(get_runtime().settings, **kwargs))  # values escaped inside
