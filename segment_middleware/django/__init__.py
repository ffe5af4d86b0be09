"""Django integration: ``"segment_middleware.django.SegmentMiddleware"`` in ``MIDDLEWARE``.

Add ``"segment_middleware.django"`` to ``INSTALLED_APPS`` too for the system checks, the
log-in ``identify`` and the ``{% segment_snippet %}`` template tag.

Django imports this module while it loads its apps, before models can be imported: it
imports the middleware and ``HttpRequest``, never a model.
"""

from django.http import HttpRequest

from ..tracker import Tracker
from .middleware import SegmentMiddleware

__all__ = ["SegmentMiddleware", "TrackedHttpRequest"]


class TrackedHttpRequest(HttpRequest):
    """For annotations only: a request that went through ``SegmentMiddleware``.

    ``def view(request: TrackedHttpRequest) -> HttpResponse`` gives ``request.segment`` its
    type (completion, and mypy checking of the calls); async views and ``path()`` accept it
    too. Django still passes its own request class (``WSGIRequest``, ``ASGIRequest``), so
    never ``isinstance`` against this class or instantiate it.
    """

    segment: Tracker
