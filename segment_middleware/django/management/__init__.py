"""Management commands of the ``segment_middleware.django`` app."""
