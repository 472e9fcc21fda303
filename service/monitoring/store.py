"""The served-decision store behind ``POST /feedback``: which decisions a monitored request got,
kept in Redis so that feedback may reach any replica behind a load balancer.

A request id is 128 random bits (32 lowercase hex characters), so that nobody can label another
caller's requests by guessing ids; an id issued by Redis (a stream entry id, ``<ms>-<seq>``) was
found in a few tries. Each record is a key of its own, ``{prefix}:monitor:served:{id}``, written
with the TTL (``feedback.ttl_s``), so protected attributes are not kept longer than feedback is
accepted. A list of ids in issue order bounds the count: the Lua script that stores a record
appends its id and deletes the oldest records beyond ``feedback.max_requests``, all in one round
trip. Requests without a ``monitor`` field never touch the store.

An id that is not found may never have been issued, may have expired or may have been evicted:
a random id carries no issue time or sequence to tell these apart (an issued one could only be
told apart by keeping a trace of every evicted id, which the count bound exists to avoid), so all
three are one 404 with reason ``unknown`` whose message names the possibilities. A malformed id
is the same 404 here; the route refuses it earlier, as a 422.

The script deletes evicted records by keys it reads from the list, not keys it is passed: fine on
the single Redis (or replicated primary) the gateway uses, not on Redis Cluster. ``LPOP`` with a
count needs Redis >= 6.2.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final

import orjson
import redis.asyncio as aioredis

from service.errors import RequestNotFound
from service.monitoring.config import FeedbackSettings

REQUEST_ID_BYTES: Final = 16
REQUEST_ID_CHARS: Final = 2 * REQUEST_ID_BYTES
REQUEST_ID_PATTERN: Final = rf"^[0-9a-f]{{{REQUEST_ID_CHARS}}}$"
REQUEST_ID: Final = re.compile(REQUEST_ID_PATTERN)
# Evictions per write: bounds the script's work when max_requests was lowered a lot; the rest
# goes on later writes.
MAX_EVICTIONS_PER_PUT: Final = 1000

# KEYS: the record, the id list.  ARGV: record, ttl_s, max_requests, eviction cap, record key
# prefix, the id.  Returns how many records were evicted.
_PUT_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local kept = redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local excess = math.min(kept - tonumber(ARGV[3]), tonumber(ARGV[4]))
if excess <= 0 then return 0 end
local evicted = redis.call('LPOP', KEYS[2], excess)
local keys = {}
for i, id in ipairs(evicted) do keys[i] = ARGV[5] .. id end
redis.call('DEL', unpack(keys))
return excess
"""


def new_request_id() -> str:
    """128 random bits from the OS's CSPRNG, as 32 lowercase hex characters."""
    return secrets.token_hex(REQUEST_ID_BYTES)


@dataclass(frozen=True)
class ServedDecisions:
    """One monitored request: its model, raw and fair class indices and reported groups."""

    model: str
    raw: list[int]
    fair: list[int]
    groups: dict[str, list[str | None]]

    def to_bytes(self) -> bytes:
        return orjson.dumps({"m": self.model, "r": self.raw, "f": self.fair, "g": self.groups})

    @classmethod
    def from_bytes(cls, data: bytes) -> ServedDecisions:
        d = orjson.loads(data)
        return cls(model=d["m"], raw=d["r"], fair=d["f"], groups=d["g"])

    def groups_of(self, index: int) -> dict[str, str | None]:
        return {attr: column[index] for attr, column in self.groups.items()}


class ServedDecisionStore:
    """Bounded, TTL'd, shared by replicas; see the module docstring."""

    def __init__(self, redis: aioredis.Redis, prefix: str, settings: FeedbackSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = prefix
        self.index = f"{prefix}:monitor:served_ids"
        self._record_prefix = f"{prefix}:monitor:served:"
        self._put = redis.register_script(_PUT_SCRIPT)

    def record_key(self, request_id: str) -> str:
        return self._record_prefix + request_id

    def _claims(self, request_id: str) -> str:
        return f"{self.prefix}:monitor:feedback:{request_id}"

    async def put(self, record: ServedDecisions) -> str:
        """Store a record under a new random id and evict the oldest beyond the bound, in one
        round trip; returns the request id."""
        request_id = new_request_id()
        settings = self.settings
        await self._put(
            keys=[self.record_key(request_id), self.index],
            args=[
                record.to_bytes(),
                settings.ttl_s,
                settings.max_requests,
                MAX_EVICTIONS_PER_PUT,
                self._record_prefix,
                request_id,
            ],
            client=self.redis,
        )
        return request_id

    async def get(self, request_id: str) -> ServedDecisions:
        """The record, or ``RequestNotFound`` (see the module docstring for why one reason)."""
        if REQUEST_ID.fullmatch(request_id) is None:
            raise RequestNotFound(
                f"'{request_id[:80]}' is not a request id issued by this gateway (32 hex "
                "characters)",
                reason="unknown",
            )
        data = await self.redis.get(self.record_key(request_id))
        if data is None:
            raise RequestNotFound(
                f"request {request_id} is unknown: it was not issued for a request with a "
                f"monitor field, or it has expired (feedback is accepted for "
                f"{self.settings.ttl_s} s after the answer) or was evicted (the store keeps "
                f"the last {self.settings.max_requests} monitored requests)",
                reason="unknown",
            )
        return ServedDecisions.from_bytes(data)

    async def claim(self, request_id: str, index: int) -> bool:
        """Mark instance ``index`` as labelled; False if it already was (feedback counts once)."""
        key = self._claims(request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.setbit(key, index, 1)
            pipe.expire(key, self.settings.ttl_s)
            previous, _ = await pipe.execute()
        return previous == 0
