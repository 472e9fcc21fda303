"""The served-decision store behind ``POST /feedback``: which decisions a monitored request got,
kept in Redis so that feedback may reach any replica behind a load balancer.

One Redis stream holds a record per monitored request; the stream entry id *is* the request id
(``<ms>-<seq>``, issued by Redis, unique across replicas). It is bounded twice: ``MAXLEN ~``
keeps at most about ``max_requests`` records and ``MINID ~`` drops records older than the TTL,
so protected attributes are not kept longer than feedback is accepted. Requests without a
``monitor`` field never touch it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from service.errors import RequestNotFound
from service.monitoring.config import FeedbackSettings

REQUEST_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


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
        self.stream = f"{prefix}:monitor:served"
        self.prefix = prefix

    def _claims(self, request_id: str) -> str:
        return f"{self.prefix}:monitor:feedback:{request_id}"

    def _oldest_kept_ms(self) -> int:
        return int(time.time() * 1000) - self.settings.ttl_s * 1000

    async def put(self, record: ServedDecisions) -> str:
        """Store a record and trim the stream in one round trip; returns the request id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                self.stream,
                {"d": record.to_bytes()},
                maxlen=self.settings.max_requests,
                approximate=True,
            )
            pipe.xtrim(self.stream, minid=str(self._oldest_kept_ms()), approximate=True)
            request_id, _ = await pipe.execute()
        return request_id.decode()

    async def get(self, request_id: str) -> ServedDecisions:
        """The record, or ``RequestNotFound`` saying whether it is unknown, expired or evicted."""
        match = REQUEST_ID.fullmatch(request_id)
        if match is None:
            raise RequestNotFound(
                f"'{request_id}' is not a request id issued by this gateway", reason="unknown"
            )
        if int(match[1]) < self._oldest_kept_ms():
            raise RequestNotFound(
                f"request {request_id} has expired: feedback is accepted for "
                f"{self.settings.ttl_s} s after the answer",
                reason="expired",
            )
        entries = await self.redis.xrange(self.stream, min=request_id, max=request_id, count=1)
        if entries:
            return ServedDecisions.from_bytes(entries[0][1][b"d"])
        oldest = await self.redis.xrange(self.stream, count=1)
        if oldest and _id_key(oldest[0][0].decode()) > (int(match[1]), int(match[2])):
            raise RequestNotFound(
                f"request {request_id} was evicted: the store keeps the last "
                f"{self.settings.max_requests} monitored requests",
                reason="evicted",
            )
        raise RequestNotFound(
            f"request {request_id} is unknown: only answers to requests with a monitor "
            "field can receive feedback",
            reason="unknown",
        )

    async def claim(self, request_id: str, index: int) -> bool:
        """Mark instance ``index`` as labelled; False if it already was (feedback counts once)."""
        key = self._claims(request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.setbit(key, index, 1)
            pipe.expire(key, self.settings.ttl_s)
            previous, _ = await pipe.execute()
        return previous == 0


def _id_key(request_id: str) -> tuple[int, int]:
    ms, _, seq = request_id.partition("-")
    return int(ms), int(seq)
