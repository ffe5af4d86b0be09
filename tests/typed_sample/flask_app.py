"""A Flask app: ``segment_middleware.flask.tracker()`` is the request's ``Tracker``."""

from __future__ import annotations

import os

from flask import Flask, g
from typing_extensions import assert_type

from segment_middleware import Tracker
from segment_middleware.flask import Segment, tracker

app = Flask(__name__)
Segment(app, write_key=os.environ.get("SEGMENT_WRITE_KEY"), exclude_paths=["/health"], honor_dnt=True)

other = Flask("other")
segment = Segment(flush_interval=1)
segment.init_app(other, flush_at=50, before_send=[lambda message: message])


@app.route("/products/<slug>")
def product(slug: str) -> str:
    assert_type(tracker(), Tracker)
    tracker().track("Product Viewed", {"slug": slug})
    tracker().b2b.signed_up(type="organic")
    g.segment.page("Product")  # g's attributes are Any: works, unchecked
    return slug
