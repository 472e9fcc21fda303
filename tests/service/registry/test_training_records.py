"""What a training job writes with a version: status, report, job marker — all or nothing."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from service.errors import PatchNotFound, PatchRejected, RegistryError
from service.registry.models import (
    REJECTED,
    VALIDATED,
    PatchReport,
    StackEntry,
    VersionStatus,
)
from service.registry.store import Registry
from tests.service.registry.conftest import SERVABLE, make_spec

BLOB = b"\x08\x01onnx-bytes"
REPORT = PatchReport(json_bytes=b'{"eo_bias": 0.02}', png=b"\x89PNG...")


async def test_version_is_registered_with_its_status_and_report(registry: Registry) -> None:
    status = VersionStatus(status=VALIDATED, reason="bias 19.0 -> 3.1")
    m = await registry.register_version("race", make_spec(), BLOB, status=status, report=REPORT)
    assert await registry.get_status("race", m.version) == {
        "status": VALIDATED,
        "reason": "bias 19.0 -> 3.1",
    }
    assert await registry.get_report("race", m.version) == REPORT


async def test_version_without_report_answers_not_found(registry: Registry) -> None:
    m = await registry.register_version("race", make_spec(), BLOB)
    with pytest.raises(PatchNotFound, match="no training report"):
        await registry.get_report("race", m.version)


async def test_a_retried_job_gets_back_the_version_it_registered(registry: Registry) -> None:
    first = await registry.register_version("race", make_spec(), BLOB, job_id="job-1")
    again = await registry.register_version("race", make_spec(), BLOB + b"x", job_id="job-1")
    other = await registry.register_version("race", make_spec(), BLOB, job_id="job-2")
    assert again == first
    assert other.version == first.version + 1
    assert [m.version for m in await registry.list_versions("race")] == [1, 2]


async def test_a_taken_version_number_writes_no_status_report_or_marker(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    # Version 1's manifest key is already taken (by tampering): the registration must fail
    # whole, leaving nothing of itself under version 1.
    await redis_client.set(registry.keys.manifest("race", 1), b"{}")
    await redis_client.sadd(registry.keys.patches(), "race")
    status = VersionStatus(status=REJECTED, reason="x")
    with pytest.raises(RegistryError, match="already exists"):
        await registry.register_version(
            "race", make_spec(), BLOB, status=status, report=REPORT, job_id="job-9"
        )
    assert await redis_client.get(registry.keys.manifest("race", 1)) == b"{}"
    assert not await redis_client.exists(registry.keys.status("race", 1))
    assert not await redis_client.exists(registry.keys.report("race", 1))
    assert not await redis_client.exists(registry.keys.job_version("job-9", "race"))


async def test_rejected_versions_never_become_active(registry: Registry) -> None:
    status = VersionStatus(status=REJECTED, reason="bias not reduced")
    bad = await registry.register_version("race", make_spec(), BLOB, status=status)
    with pytest.raises(PatchRejected, match="bias not reduced"):
        await registry.set_stack("credit", [StackEntry(patch="race", version=bad.version)], 0)
    assert (await registry.get_stack("credit")).revision == 0


async def test_a_version_rejected_later_blocks_rollback_to_it(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    good = await registry.register_version("race", make_spec(), BLOB, status=SERVABLE)
    entry = StackEntry(patch="race", version=good.version)
    await registry.set_stack("credit", [entry], 0)
    await registry.set_stack("credit", [], 1)
    status = VersionStatus(status=REJECTED, reason="found biased in production")
    await registry.set_status("race", good.version, status)
    with pytest.raises(PatchRejected, match="found biased in production"):
        await registry.rollback("credit")
