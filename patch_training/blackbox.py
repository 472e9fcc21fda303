"""Ask the black box about a calibration set, through the gateway's own upstream adapter.

Training and serving must see the same numbers: the same codec, the same normalisation to
log-probabilities, the same retries and circuit breaker. Answers are cached in Redis under a
hash of the request (endpoint, protocol, output reading, class order and the exact input bytes),
so re-running a job — after a failed export, with other hyper-parameters, by a retried worker —
does not query the black box again.

Trust model. Redis is not trusted: anyone who can write to it (a compromised host, a shared
cache) could otherwise rewrite a cached answer, and the next job would train on the forged
numbers and register a signed, "validated" patch built from them. So every entry carries an
HMAC-SHA256 under the signing key that gateways and trainers share and that is never stored in
Redis (``service.registry.signing``). The MAC covers the entry's full Redis key — an entry copied
under another key is refused — and the exact stored npy bytes, header (shape, dtype) included.
Reading is bounded and pickle-free: the length is checked before the MAC is computed, the MAC
before anything is parsed, the declared shape and dtype before any number is read, and
non-finite values are refused. An entry that fails any check is never used: the job queries the
black box again, overwrites the entry with an authenticated one, logs a warning naming the key
and the reason, and its result says so (``JobResult.cache_entry_refused``).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.registry.keys import RegistryKeys
from service.registry.signing import canonical_json, sha256_hex, sign, verify
from service.settings import ModelConfig
from service.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

MAGIC = b"eraser-bb-cache/v1\n"  # a format change (or an old, unsigned npy entry) is refused
MAC_HEX_LEN = 64  # HMAC-SHA256, lower-case hex
DTYPE = np.dtype("<f8")  # what ``put`` writes; anything else was not written by us
NPY_VERSION = (1, 0)  # ``put`` writes this npy version; its header is at most 65 535 bytes
MAX_NPY_OVERHEAD = 10 + 65_535  # magic, version, length field and the largest v1.0 header


class CacheLookup(NamedTuple):
    """A cached answer, or None with the reason a stored entry was refused (None: no entry)."""

    log_p: np.ndarray | None
    refused: str | None = None


class Answers(NamedTuple):
    """The black box's log-probabilities [N, K], whether they came from the cache, and why a
    cached entry was refused (then the black box was queried again and the entry replaced)."""

    log_p: np.ndarray
    cached: bool
    refused: str | None = None


class BadEntry(ValueError):
    """A stored entry that must not be used; the message is the reason."""


class OutputCache:
    """Black-box log-probabilities by content hash, authenticated, expiring after ``ttl_s``."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int, signing_key: bytes) -> None:
        if not signing_key:
            raise ValueError("the black-box cache needs the shared signing key")
        self._redis, self._keys, self._ttl_s = redis, RegistryKeys(prefix), ttl_s
        self._key = bytes(signing_key)

    @staticmethod
    def key_for(model: ModelConfig, x: np.ndarray) -> str:
        """Everything that changes the answer is in the hash; the model's name is not."""
        up = model.upstream
        h = hashlib.sha256()
        for part in (up.url, up.protocol, up.output_kind, up.input_name, up.output_name):
            h.update(f"{part}\x00".encode())
        h.update("\x00".join(model.classes).encode())
        x = np.ascontiguousarray(x, dtype=np.float32)
        h.update(f"{x.shape}".encode())
        h.update(x.tobytes())
        return h.hexdigest()

    def redis_key(self, key: str) -> str:
        """Where the entry for ``key`` lives (what a warning names, for an operator to inspect)."""
        return self._keys.blackbox_cache(key)

    async def get(self, key: str, shape: tuple[int, int]) -> CacheLookup:
        """The entry under ``key`` if it is authentic and holds a finite [N, K] array of
        ``shape``; never raises for a bad entry (the caller re-queries instead)."""
        redis_key = self.redis_key(key)
        try:
            raw = await self._redis.get(redis_key)
        except ResponseError as exc:  # e.g. WRONGTYPE: someone put a hash or a list there
            return CacheLookup(None, f"unreadable entry: {exc}")
        if raw is None:
            return CacheLookup(None)
        try:
            return CacheLookup(self._open(redis_key, raw, shape))
        except BadEntry as exc:
            return CacheLookup(None, str(exc))

    async def put(self, key: str, log_p: np.ndarray) -> None:
        """Store ``log_p`` as npy bytes behind a MAC bound to the entry's Redis key; replaces
        whatever is there, of any Redis type."""
        redis_key = self.redis_key(key)
        buf = io.BytesIO()
        array = np.ascontiguousarray(log_p, dtype=DTYPE)
        np.lib.format.write_array(buf, array, version=NPY_VERSION, allow_pickle=False)
        npy = buf.getvalue()
        mac = sign(self._key, _mac_payload(redis_key, npy)).encode("ascii")
        await self._redis.set(redis_key, MAGIC + mac + b"\n" + npy, ex=self._ttl_s)

    def _open(self, redis_key: str, raw: bytes, shape: tuple[int, int]) -> np.ndarray:
        """Length, then MAC, then the npy header, then the numbers; see the module docstring."""
        head = len(MAGIC) + MAC_HEX_LEN + 1
        if len(raw) > head + MAX_NPY_OVERHEAD + shape[0] * shape[1] * DTYPE.itemsize:
            raise BadEntry(f"{len(raw)} bytes, more than an {list(shape)} answer takes")
        if not raw.startswith(MAGIC) or raw[head - 1 : head] != b"\n":
            raise BadEntry("not an authenticated cache entry (unsigned, or an unknown format)")
        mac = raw[len(MAGIC) : head - 1].decode("ascii", errors="replace")
        npy = raw[head:]
        if not verify(self._key, _mac_payload(redis_key, npy), mac):
            raise BadEntry("bad MAC (rewritten, copied from another key, or another signing key)")
        return _parse_npy(npy, shape)


def _mac_payload(redis_key: str, npy: bytes) -> bytes:
    """What the MAC covers: the purpose, the entry's full Redis key (so an entry copied under
    another key is refused) and the sha256 of the exact npy bytes (header included)."""
    return canonical_json(
        {"purpose": "eraser/bb_cache/v1", "key": redis_key, "npy": sha256_hex(npy)}
    )


def _parse_npy(npy: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The array, parsed without pickle and without trusting the header: the declared shape,
    dtype and order must be the expected ones and the data exactly that long, all finite."""
    fp = io.BytesIO(npy)
    try:
        version = np.lib.format.read_magic(fp)
        if version != NPY_VERSION:
            raise BadEntry(f"npy version {version}, expected {NPY_VERSION}")
        declared, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    except BadEntry:
        raise
    except (ValueError, TypeError, SyntaxError, RecursionError) as exc:
        raise BadEntry(f"unreadable npy: {exc}") from None
    if tuple(declared) != tuple(shape) or dtype != DTYPE or fortran:
        raise BadEntry(f"declares {dtype} {list(declared)}, expected {DTYPE} {list(shape)}")
    data = npy[fp.tell() :]
    if len(data) != shape[0] * shape[1] * DTYPE.itemsize:
        raise BadEntry(f"{len(data)} data bytes for a declared {list(shape)} array")
    log_p = np.frombuffer(data, dtype=DTYPE).reshape(shape).copy()
    if not np.isfinite(log_p).all():
        raise BadEntry("non-finite values")
    return log_p


async def query_log_probs(
    model: ModelConfig,
    x: np.ndarray,
    cache: OutputCache | None = None,
    batch_size: int = 256,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Answers:
    """Black-box log-probabilities [N, K] for ``x``: from the cache when an authentic entry is
    there, else from the black box (and then cached, replacing any refused entry)."""
    key = OutputCache.key_for(model, x)
    lookup = CacheLookup(None) if cache is None else await _lookup(cache, key, model, x)
    if lookup.log_p is not None:
        if progress is not None:
            progress(len(x))
        return Answers(lookup.log_p, True)
    async with UpstreamClient(model) as upstream:
        log_p = await upstream.predict_many(x, batch_size, concurrency, progress)
    if cache is not None:
        await cache.put(key, log_p)
    return Answers(log_p, False, lookup.refused)


async def _lookup(cache: OutputCache, key: str, model: ModelConfig, x: np.ndarray) -> CacheLookup:
    """The cache's answer for ``x``; a refused entry is logged here, where it is found, so the
    warning is there even when the re-query then fails."""
    lookup = await cache.get(key, (len(x), len(model.classes)))
    if lookup.refused is not None:
        log.warning(
            "refused the cached black-box answers at %s (%s): querying the black box again and "
            "replacing the entry",
            cache.redis_key(key),
            lookup.refused,
        )
    return lookup
