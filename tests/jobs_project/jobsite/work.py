"""What every job in the tests does, whichever runner runs it.

It sends ``Order Confirmed`` through ``current()`` when the job runs as a visitor, and
``Job Without Visitor`` through ``tracker()`` when ``current()`` is None; then it leaves a
marker file, so the test knows the job ran (and its call is queued) before it stops the
worker. ``fail`` makes the job raise after that.
"""

import os
from pathlib import Path

import segment_middleware


def confirm_order(runner: str, order_id: str, fail: bool = False) -> str:
    properties = {"order_id": order_id, "runner": runner, "pid": os.getpid()}
    tracker = segment_middleware.current()
    if tracker is None:
        no_visitor = segment_middleware.tracker(anonymous_id=f"no-visitor-{order_id}")
        no_visitor.track("Job Without Visitor", properties)
    else:
        tracker.track("Order Confirmed", properties)
    (Path(os.environ["JOBS_TMP"]) / "markers" / f"{runner}-{order_id}").write_text(str(os.getpid()))
    if fail:
        raise RuntimeError(f"order {order_id} failed on purpose")
    return order_id
