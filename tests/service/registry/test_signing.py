from __future__ import annotations

import hashlib

import pytest

from service.registry.signing import canonical_json, sha256_hex, sign, verify

KEY = b"k"


def test_canonical_json_sorts_keys_without_spaces_as_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    )


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_sha256_hex_matches_hashlib() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_verify_accepts_own_signature() -> None:
    assert verify(KEY, b"payload", sign(KEY, b"payload"))


def test_verify_refuses_other_payload_key_or_signature() -> None:
    signature = sign(KEY, b"payload")
    assert not verify(KEY, b"payload!", signature)
    assert not verify(b"other", b"payload", signature)
    assert not verify(KEY, b"payload", signature[:-1] + ("0" if signature[-1] != "0" else "1"))


def test_verify_returns_false_for_non_ascii_or_empty_signature() -> None:
    assert not verify(KEY, b"payload", "é" * 64)
    assert not verify(KEY, b"payload", "")
