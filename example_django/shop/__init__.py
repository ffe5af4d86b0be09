"""A small shop that shows off segment_middleware on Django."""
