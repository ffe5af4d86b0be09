"""``path("segment/", include("segment_middleware.django.urls"))``: the collection routes.

See :mod:`segment_middleware.collect` for what each route takes and answers; set
``SEGMENT["COLLECT_PREFIX"]`` to the prefix you mount them under (default ``/segment``).
"""

from django.urls import path

from .collect_views import asset, browser, call, source
from .middleware import COLLECT_APP

app_name = COLLECT_APP

urlpatterns = [
    # SERVE_ANALYTICS_JS: analytics.js, its chunks and settings (404 while it is off)
    path(
        "analytics.js/v1/<str:key>/analytics.min.js",
        asset,
        {"form": "analytics.js/v1/{key}/analytics.min.js"},
    ),
    path("analytics-next/bundles/<str:name>", asset, {"form": "analytics-next/bundles/{name}"}),
    path("v1/projects/<str:key>/settings", asset, {"form": "v1/projects/{key}/settings"}),
    path("next-integrations/<path:name>", asset, {"form": "next-integrations/{name}"}),
    path("v1/<str:kind>", browser, name="collect-browser"),
    path("sources/<str:name>", source, name="collect-source"),
    path("<str:call>", call, name="collect-call"),
]
