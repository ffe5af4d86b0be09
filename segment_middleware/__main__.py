"""``python -m segment_middleware`` is the ``segment-middleware`` command."""

from .cli import main

raise SystemExit(main())
