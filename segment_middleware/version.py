"""The package version, in one place (pyproject reads it too)."""

__version__ = "0.1.0"

# Sent as context.library so Segment shows which integration produced the message.
LIBRARY = {"name": "segment-middleware", "version": __version__}
