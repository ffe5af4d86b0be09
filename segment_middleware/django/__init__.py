"""Django integration: ``"segment_middleware.django.SegmentMiddleware"`` in ``MIDDLEWARE``.

Add ``"segment_middleware.django"`` to ``INSTALLED_APPS`` too for the system checks, the
log-in ``identify`` and the ``{% segment_snippet %}`` template tag.
"""

from .middleware import SegmentMiddleware

__all__ = ["SegmentMiddleware"]
