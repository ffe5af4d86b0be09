"""Constants and small helpers shared by test modules."""

WRITE_KEY = "test-write-key-0123456789"
