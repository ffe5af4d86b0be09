"""tests/djapp/quiet_urls.py with django-debug-toolbar's URLs under a regex: a prefix the
middleware cannot read, so the toolbar's views are known by their namespace only."""

from django.urls import include, re_path

from .quiet_urls import urlpatterns as _pages

urlpatterns = [*_pages[:-1], re_path(r"^(?:__debug__)/", include("debug_toolbar.urls"))]
