"""Patch versions: registration, listing, status, and refusal of tampered artifacts."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from service.errors import BadRequest, IntegrityError, PatchNotFound
from service.registry.models import VersionStatus
from service.registry.signing import sha256_hex
from service.registry.store import Registry
from tests.conftest import SIGNING_KEY
from tests.service.registry.conftest import make_spec

BLOB = b"\x08\x01onnx-bytes"


async def test_register_assigns_versions_1_2_3(registry: Registry) -> None:
    manifests = [
        await registry.register_version("race", make_spec(), BLOB + bytes([i])) for i in range(3)
    ]
    assert [m.version for m in manifests] == [1, 2, 3]
    assert [m.version for m in await registry.list_versions("race")] == [1, 2, 3]
    assert (await registry.latest_version("race")).version == 3
    assert await registry.list_patches() == ["race"]


async def test_manifest_round_trips_with_valid_signature(registry: Registry) -> None:
    spec = make_spec(training_config={"epochs": 3, "lr": 0.001}, calibration_set_id="cal-1")
    registered = await registry.register_version("race", spec, BLOB)
    loaded = await registry.get_manifest("race", 1)
    assert loaded == registered
    assert loaded.signature and loaded.sha256 == sha256_hex(BLOB)
    assert loaded.size_bytes == len(BLOB) and loaded.training_config["lr"] == 0.001
    assert await registry.get_blob(loaded) == BLOB


async def test_identical_blobs_are_stored_once(
    registry: Registry, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    first = await registry.register_version("race", make_spec(), BLOB)
    second = await registry.register_version("sex", make_spec(), BLOB)
    assert first.sha256 == second.sha256
    blob_keys = [k async for k in redis_client.scan_iter(match=f"{key_prefix}:blob:*")]
    assert blob_keys == [registry.keys.blob(first.sha256).encode()]


async def test_invalid_name_or_empty_blob_is_bad_request(registry: Registry) -> None:
    with pytest.raises(BadRequest):
        await registry.register_version("no:colons", make_spec(), BLOB)
    with pytest.raises(BadRequest):
        await registry.register_version("race", make_spec(), b"")


async def test_unknown_patch_or_version_is_not_found(registry: Registry) -> None:
    with pytest.raises(PatchNotFound):
        await registry.list_versions("nope")
    with pytest.raises(PatchNotFound):
        await registry.latest_version("nope")
    await registry.register_version("race", make_spec(), BLOB)
    with pytest.raises(PatchNotFound):
        await registry.get_manifest("race", 2)


async def test_status_defaults_to_registered_or_is_the_one_registered_with(
    registry: Registry,
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    assert await registry.get_status("race", 1) == {"status": "registered", "reason": ""}
    verdict = VersionStatus(status="rejected", reason="bias not reduced")
    await registry.register_version("race", make_spec(), BLOB, status=verdict)
    assert await registry.get_status("race", 2) == {
        "status": "rejected",
        "reason": "bias not reduced",
    }
    await registry.get_manifest("race", 2)  # status lives outside the signed manifest
    with pytest.raises(PatchNotFound):
        await registry.get_status("race", 9)


async def test_tampered_blob_is_refused(registry: Registry, redis_client: aioredis.Redis) -> None:
    manifest = await registry.register_version("race", make_spec(), BLOB)
    await redis_client.set(registry.keys.blob(manifest.sha256), b"evil")
    with pytest.raises(IntegrityError, match="hash mismatch"):
        await registry.get_blob(manifest)


async def test_missing_blob_is_refused(registry: Registry, redis_client: aioredis.Redis) -> None:
    manifest = await registry.register_version("race", make_spec(), BLOB)
    await redis_client.delete(registry.keys.blob(manifest.sha256))
    with pytest.raises(IntegrityError, match="missing"):
        await registry.get_blob(manifest)


async def test_reregistering_content_repairs_a_corrupted_blob(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    manifest = await registry.register_version("race", make_spec(), BLOB)
    await redis_client.set(registry.keys.blob(manifest.sha256), b"evil")
    await registry.register_version("race", make_spec(), BLOB)
    assert await registry.get_blob(manifest) == BLOB


async def _edit_manifest(redis: aioredis.Redis, key: str, **changes: object) -> None:
    stored = json.loads(await redis.get(key))
    await redis.set(key, json.dumps(stored | changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "other"},
        {"classes": ["approve", "deny"]},
        {"sha256": "0" * 64},
        {"signature": "0" * 64},
        {"signature": "é"},
    ],
    ids=["model", "classes", "sha256", "signature", "non-ascii-signature"],
)
async def test_tampered_manifest_is_refused(
    registry: Registry, redis_client: aioredis.Redis, changes: dict[str, object]
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    await _edit_manifest(redis_client, registry.keys.manifest("race", 1), **changes)
    with pytest.raises(IntegrityError, match="signature mismatch"):
        await registry.get_manifest("race", 1)
    with pytest.raises(IntegrityError):
        await registry.list_versions("race")


async def test_manifest_copied_to_another_version_is_refused(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    await registry.register_version("race", make_spec(), BLOB + b"2")
    old = await redis_client.get(registry.keys.manifest("race", 1))
    await redis_client.set(registry.keys.manifest("race", 2), old)
    with pytest.raises(IntegrityError, match="identity mismatch"):
        await registry.get_manifest("race", 2)


async def test_unreadable_manifest_is_refused(
    registry: Registry, redis_client: aioredis.Redis
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    await redis_client.set(registry.keys.manifest("race", 1), b"{not json")
    with pytest.raises(IntegrityError):
        await registry.get_manifest("race", 1)


async def test_registry_with_other_key_refuses_manifest(
    registry: Registry, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    stranger = Registry(redis_client, b"another-key", prefix=key_prefix)
    with pytest.raises(IntegrityError, match="signature mismatch"):
        await stranger.get_manifest("race", 1)


async def test_signing_key_is_never_written_to_redis(
    registry: Registry, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    await registry.register_version("race", make_spec(), BLOB)
    await registry.set_stack("credit", [], expected_revision=0)
    async for key in redis_client.scan_iter(match=f"{key_prefix}:*"):
        if await redis_client.type(key) == b"string":
            assert SIGNING_KEY not in await redis_client.get(key)


async def test_empty_key_or_decoding_client_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        Registry(redis_client, b"")
    decoding = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError):
        Registry(decoding, b"key")
    await decoding.aclose()
