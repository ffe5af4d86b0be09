"""Random (version 4) UUID strings: every messageId, and the anonymousId of a new visitor.

``str(uuid.uuid4())`` costs a system call and a UUID object per id. Here one
``os.urandom`` call makes a block of ids at once, and an id is a list pop. Ids are as
random as uuid4's (the same source). A forked child forgets the block its parent left
(``lifecycle.generation``), so two processes never hand out the same id: for an
anonymousId that would merge two visitors.
"""

from __future__ import annotations

import os

from . import lifecycle

__all__ = ["random_id"]

_BLOCK = 256  # ids made from one os.urandom() call
_SET_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version 4
_SET_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: RFC 4122 variant
_LAYOUT = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx,"  # one id and a separator; x: a hex digit
_DIGIT_AT = [i for i, c in enumerate(_LAYOUT) if c == "x"]  # the 32 digits' places
_TEMPLATE = _LAYOUT.replace("x", "0").encode("ascii") * _BLOCK
_pool: list[str] = []
_pool_generation = lifecycle.generation


def _block() -> list[str]:
    """``_BLOCK`` ids from one system call, without a Python operation per id: the k-th
    hex digit of every id is copied into its place in one strided slice assignment, and
    the ids come out of one ``split``. A test holds them to uuid4's format."""
    raw = bytearray(os.urandom(16 * _BLOCK))
    raw[6::16] = raw[6::16].translate(_SET_VERSION)
    raw[8::16] = raw[8::16].translate(_SET_VARIANT)
    digits = raw.hex().encode("ascii")
    text = bytearray(_TEMPLATE)
    step = len(_LAYOUT)
    for k, place in enumerate(_DIGIT_AT):
        text[place::step] = digits[k::32]
    ids = text.decode("ascii").split(",")
    ids.pop()  # after the last separator
    return ids


def random_id() -> str:
    """A random (version 4) UUID string, never one a parent or a child process also has."""
    global _pool_generation
    if _pool_generation != lifecycle.generation:
        _pool.clear()
        _pool_generation = lifecycle.generation
    try:
        return _pool.pop()
    except IndexError:
        lifecycle.track_forks()  # the pool is per process from its first id on
        _pool.extend(_block())
        return _pool.pop()
