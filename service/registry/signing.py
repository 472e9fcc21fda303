"""Canonical bytes, content hashes and HMAC signatures for registry artifacts.

The signing key is shared by gateways and trainers and never stored in Redis, so someone who can
write to Redis still cannot forge a manifest that a gateway will accept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8, no NaN/Infinity.

    Signatures are computed over these bytes, so two processes must produce them identically;
    NaN is refused because it is not JSON and would not survive a round trip.
    """
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Content address of a blob (lower-case hex)."""
    return hashlib.sha256(data).hexdigest()


def sign(key: bytes, payload: bytes) -> str:
    """HMAC-SHA256 of ``payload`` under ``key``, lower-case hex."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(key: bytes, payload: bytes, signature: str) -> bool:
    """Constant-time check of ``signature``; False (never an exception) for any malformed value.

    Compares bytes, not str: ``hmac.compare_digest`` raises TypeError on non-ASCII str, and a
    tampered signature may contain anything.
    """
    if not isinstance(signature, str):
        return False
    expected = sign(key, payload).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", errors="replace"))
