"""Calibration sets on Redis, content-addressed by the sha256 of the uploaded bytes.

A patch version names the set it was trained on by that hash, so sets are kept forever (no TTL)
and every read re-hashes the bytes: a patch is only rebuildable from exactly the same data.
"""

from __future__ import annotations

import re

import redis.asyncio as aioredis
from pydantic import ValidationError

from service.calibration.meta import CalibrationMeta
from service.errors import CalibrationSetNotFound, IntegrityError
from service.registry.keys import RegistryKeys
from service.registry.signing import canonical_json, sha256_hex

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class CalibrationStore:
    """Uploaded calibration bytes and their CalibrationMeta, side by side."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "eraser") -> None:
        """Uploads are binary, so the client must return bytes (``decode_responses=False``)."""
        if redis.get_encoder().decode_responses:
            raise ValueError("the calibration store needs a client with decode_responses=False")
        self._redis = redis
        self._keys = RegistryKeys(prefix)

    @property
    def keys(self) -> RegistryKeys:
        """Key names, for tools and tests that inspect Redis directly."""
        return self._keys

    async def put(self, data: bytes, meta: CalibrationMeta) -> str:
        """Store ``data`` and ``meta`` in one MULTI; returns the sha256.

        Idempotent: the bytes are rewritten (repairing a corrupted copy) and the first meta is
        kept, like a manifest. Jobs carry their own target and bias, so the same file uploaded
        again for another bias column is accepted; the stored meta describes the first upload.
        """
        digest = sha256_hex(data)
        if digest != meta.sha256:
            raise IntegrityError(
                f"calibration meta names {meta.sha256}, but the bytes hash to {digest}",
                sha256=digest,
            )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.calibration(digest), data)
            pipe.set(self._keys.calibration_meta(digest), _dump(meta), nx=True)
            await pipe.execute()
        return digest

    async def get(self, sha256: str) -> tuple[bytes, CalibrationMeta]:
        """The bytes and meta; IntegrityError unless the bytes still hash to ``sha256``."""
        _check_sha(sha256)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.calibration(sha256))
            pipe.get(self._keys.calibration_meta(sha256))
            data, raw_meta = await pipe.execute()
        _verify(data, sha256, "calibration set")
        if raw_meta is None:
            raise IntegrityError(f"calibration set {sha256} has no meta", sha256=sha256)
        return data, _parse(sha256, raw_meta)

    async def put_pairs(self, data: bytes) -> str:
        """Store an FMD job's counterfactual pairs NPZ beside the sets, content-addressed and
        kept like them (the patch version names it by the spec's ``pairs_id``); its sha256."""
        digest = sha256_hex(data)
        await self._redis.set(self._keys.calibration(digest), data)
        return digest

    async def get_pairs(self, sha256: str) -> bytes:
        """The pairs bytes, re-hashed (IntegrityError unless they still hash to ``sha256``);
        the caller parses them as untrusted input (``loader.load_calibration``)."""
        _check_sha(sha256)
        data = await self._redis.get(self._keys.calibration(sha256))
        return _verify(data, sha256, "pairs file")


def _verify(data: bytes | None, sha256: str, what: str) -> bytes:
    """``data`` read back under ``sha256``: there, and still hashing to it."""
    if data is None:
        raise CalibrationSetNotFound(f"{what} {sha256} not found", sha256=sha256)
    if sha256_hex(data) != sha256:
        raise IntegrityError(f"{what} {sha256}: hash mismatch", sha256=sha256)
    return data


def _check_sha(sha256: str) -> None:
    """Only hex digests become keys; anything else cannot name a stored set."""
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise CalibrationSetNotFound(f"calibration set {sha256!r} not found", sha256=sha256)


def _dump(meta: CalibrationMeta) -> bytes:
    return canonical_json(meta.model_dump(mode="json"))


def _parse(sha256: str, raw: bytes) -> CalibrationMeta:
    try:
        meta = CalibrationMeta.model_validate_json(raw)
    except ValidationError as exc:
        raise IntegrityError(f"calibration meta {sha256} is unreadable", sha256=sha256) from exc
    if meta.sha256 != sha256:
        raise IntegrityError(f"calibration meta stored as {sha256} names {meta.sha256}")
    return meta
