"""Webhook signature checks: an HMAC-SHA256 of the raw body, in three wire formats.

- :class:`HMACSignature`: the plain form. The header holds the hex (or base64) HMAC-SHA256
  of the body; with ``timestamp_header``, of ``b"<timestamp>." + body``, and the timestamp
  must be within ``tolerance`` seconds of now.
- :class:`StripeSignature`: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]``, the
  HMAC of ``b"<t>." + body``, ``t`` within ``tolerance`` (Stripe's default: 300 s).
- :class:`GitHubSignature`: ``X-Hub-Signature-256: sha256=<hex>``, the HMAC of the body.
  GitHub signs no timestamp, so a captured delivery verifies again later; de-duplicate on
  ``X-GitHub-Delivery`` (or pass it as ``message_id``) where a replay would matter.

Invariants every verifier keeps: the body is hashed exactly as received (never re-encoded
JSON); digests are compared with :func:`hmac.compare_digest`; a timestamp only counts when
it is part of the signed bytes; an error says what was wrong with the request, never a
secret, a digest or the body. Several secrets may be given (rotation): any one verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "GitHubSignature",
    "HMACSignature",
    "SignatureError",
    "StaleTimestamp",
    "StripeSignature",
    "Verifier",
]

_MAX_TIMESTAMP_DIGITS = 12  # seconds since 1970 until the year 33658: longer is garbage


class SignatureError(Exception):
    """The request's signature is missing, malformed or wrong. The message says which, and
    is safe to log: it holds no secret, digest or body."""


class StaleTimestamp(SignatureError):
    """The signature is right but its signed timestamp is outside the replay window."""


class Verifier(Protocol):
    """Checks one request. ``headers`` have lower-case names; ``secrets`` are the accepted
    keys (at least one); ``now`` is the time in seconds since the epoch. Raises
    :class:`SignatureError` (or :class:`StaleTimestamp`) when the request is not genuine."""

    @property
    def header(self) -> str: ...

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes], now: float
    ) -> None: ...


def _digest(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _matches(given: Sequence[bytes], secrets: Sequence[bytes], message: bytes, encode: _Encoder) -> bool:
    """Does any given signature equal the HMAC of ``message`` under any secret? Every pair
    is compared in constant time (the loop's length depends only on the counts)."""
    found = False
    for secret in secrets:
        expected = encode(_digest(secret, message))
        for candidate in given:
            found |= hmac.compare_digest(expected, candidate)
    return found


class _Encoder(Protocol):
    def __call__(self, digest: bytes, /) -> bytes: ...


def _hex(digest: bytes) -> bytes:
    return binascii.hexlify(digest)


def _b64(digest: bytes) -> bytes:
    return base64.b64encode(digest)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError(f"no {name} header")
    return value.strip()


def _timestamp(text: str, what: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError(f"{what} is not a Unix time in seconds")
    return int(text)


def _fresh(timestamp: int, now: float, tolerance: float) -> None:
    """Both directions count: a signed time far in the future would let a captured request
    be replayed until then."""
    if abs(now - timestamp) > tolerance:
        age = now - timestamp
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        raise StaleTimestamp(f"stale: the signed timestamp is {when} (window: {tolerance:g} s)")


def _signature_bytes(text: str) -> bytes:
    """The header's signature as bytes for compare_digest (which refuses non-ASCII str).
    Hex is compared in lower case, as digests are written either way."""
    return text.strip().lower().encode("utf-8", "replace")


@dataclass(frozen=True)
class HMACSignature:
    """The plain form: ``header`` holds ``prefix`` + the HMAC-SHA256 of the body in
    ``encoding`` (``"hex"`` or ``"base64"``); with ``timestamp_header``, the HMAC of
    ``b"<timestamp>." + body`` (the timestamp in Unix seconds), checked to be within
    ``tolerance`` seconds of now."""

    header: str = "x-signature"
    timestamp_header: str | None = None
    tolerance: float = 300.0
    prefix: str = ""
    encoding: Literal["hex", "base64"] = "hex"

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.header.lower())
        if self.timestamp_header is not None:
            object.__setattr__(self, "timestamp_header", self.timestamp_header.lower())
        if self.encoding not in ("hex", "base64"):
            raise ValueError(f"encoding must be 'hex' or 'base64', got {self.encoding!r}")
        if not self.tolerance > 0:
            raise ValueError("tolerance must be a positive number of seconds")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes], now: float) -> None:
        value = _header(headers, self.header)
        if self.prefix:
            if not value.lower().startswith(self.prefix.lower()):
                raise SignatureError(f"{self.header} does not start with {self.prefix!r}")
            value = value[len(self.prefix) :]
        message = body
        timestamp = None
        if self.timestamp_header is not None:
            timestamp = _timestamp(_header(headers, self.timestamp_header), self.timestamp_header)
            message = b"%d." % timestamp + body
        if self.encoding == "hex":
            given, encode = _signature_bytes(value), _hex
        else:  # base64 is case-sensitive
            given, encode = value.strip().encode("utf-8", "replace"), _b64
        if not _matches([given], secrets, message, encode):
            raise SignatureError(f"{self.header} does not match the body")
        if timestamp is not None:
            _fresh(timestamp, now, self.tolerance)


@dataclass(frozen=True)
class StripeSignature:
    """Stripe's ``Stripe-Signature: t=...,v1=...`` (several ``v1`` while a secret is
    rolled); other schemes (``v0``, the test mode's legacy one) are ignored, as Stripe's
    own libraries do."""

    header: str = "stripe-signature"
    tolerance: float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.header.lower())
        if not self.tolerance > 0:
            raise ValueError("tolerance must be a positive number of seconds")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes], now: float) -> None:
        timestamps: list[str] = []
        signatures: list[bytes] = []
        for item in _header(headers, self.header).split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                continue
            if key == "t":
                timestamps.append(value)
            elif key == "v1":
                signatures.append(_signature_bytes(value))
        if len(timestamps) != 1:
            raise SignatureError(f"{self.header} has no single t= timestamp")
        if not signatures:
            raise SignatureError(f"{self.header} has no v1= signature")
        timestamp = _timestamp(timestamps[0], f"{self.header} t=")
        if not _matches(signatures, secrets, b"%d." % timestamp + body, _hex):
            raise SignatureError(f"{self.header} does not match the body")
        _fresh(timestamp, now, self.tolerance)


@dataclass(frozen=True)
class GitHubSignature:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex>`` (the SHA-1 ``X-Hub-Signature`` is
    not accepted). No timestamp: GitHub signs none."""

    header: str = "x-hub-signature-256"

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.header.lower())

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[bytes], now: float) -> None:
        scheme, sep, value = _header(headers, self.header).partition("=")
        if not sep or scheme.strip().lower() != "sha256":
            raise SignatureError(f"{self.header} is not sha256=<hex>")
        if not _matches([_signature_bytes(value)], secrets, body, _hex):
            raise SignatureError(f"{self.header} does not match the body")
