"""The soak's Flask app (tests/soak_scenario.py): one tracked page, ``/health`` (excluded), nothing else.

Settings: ``SEGMENT_WRITE_KEY``, ``SEGMENT_HOST`` and ``SEGMENT_LOCAL_STORE`` from the
environment, as a deployed app gets them; the rest as a Flask user sets them, in
``app.config["SEGMENT_..."]``, here from the JSON object in ``SOAK_SEGMENT_SETTINGS``
(``{"MAX_QUEUE_SIZE": 2000, ...}``). A setting this version of the package does not know
is left out (``Segment(app)`` would refuse it) and said on stderr, so the soak can report
that it ran without it instead of not running at all.

The package's log goes to stderr at INFO, which gunicorn hands to its log: the soak reads
the per-process ``segment: stats at exit (pid N): {...}`` lines and the drop and spool
lines from there.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from flask import Flask

from segment_middleware.flask import Segment
from segment_middleware.settings import Settings

#: The line the soak looks for (``soak_scenario.UNKNOWN_SETTING``).
UNKNOWN_SETTING = "soak_app: setting unknown to this segment_middleware, left out: SEGMENT_{}"


def configure_logging() -> None:
    """The package's INFO lines on stderr, each once (not also through a root handler)."""
    logger = logging.getLogger("segment_middleware")
    if not any(getattr(h, "soak", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s"))
        handler.soak = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def create_app() -> Flask:
    configure_logging()
    app = Flask(__name__)
    known = set(Settings.names())
    for key, value in json.loads(os.environ.get("SOAK_SEGMENT_SETTINGS") or "{}").items():
        if key.lower() in known:
            app.config[f"SEGMENT_{key.upper()}"] = value
        else:
            print(UNKNOWN_SETTING.format(key.upper()), file=sys.stderr, flush=True)
    Segment(app)

    @app.get("/")
    def home() -> str:
        return "ok"

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


app = create_app()
