"""Active stacks: compare-and-set, monotonic revisions, history and rollback."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import BadRequest, Conflict, PatchNotFound, StackConflict
from service.registry.models import StackEntry
from service.registry.store import Registry
from tests.service.registry.conftest import SERVABLE, make_spec

MODEL = "credit"


async def _patches(registry: Registry, count: int = 2) -> list[StackEntry]:
    for i in range(count):
        await registry.register_version(
            "race", make_spec(MODEL), f"blob-{i}".encode(), status=SERVABLE
        )
    return [StackEntry(patch="race", version=v + 1, alpha=0.5) for v in range(count)]


async def test_unset_stack_is_revision_zero_and_empty(registry: Registry) -> None:
    stack = await registry.get_stack(MODEL)
    assert (stack.revision, stack.entries) == (0, [])
    assert await registry.get_revision(MODEL) == 0


async def test_set_stack_stores_entries_with_next_revision(registry: Registry) -> None:
    v1, _ = await _patches(registry)
    stack = await registry.set_stack(MODEL, [v1], expected_revision=0, reason="first")
    assert stack.revision == 1 and stack.updated_at is not None
    assert await registry.get_stack(MODEL) == stack
    assert await registry.get_revision(MODEL) == 1


async def test_stale_revision_raises_conflict_and_leaves_stack_unchanged(
    registry: Registry,
) -> None:
    v1, v2 = await _patches(registry)
    before = await registry.set_stack(MODEL, [v1], expected_revision=0)
    with pytest.raises(StackConflict) as info:
        await registry.set_stack(MODEL, [v2], expected_revision=0)
    assert info.value.details["current_revision"] == 1
    assert await registry.get_stack(MODEL) == before
    assert len(await registry.history(MODEL)) == 1


async def test_concurrent_set_stack_with_same_revision_has_one_winner(
    registry: Registry,
) -> None:
    v1, v2 = await _patches(registry)
    attempts = [registry.set_stack(MODEL, [e], expected_revision=0) for e in (v1, v2) * 5]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StackConflict) for r in results if r not in winners)
    assert await registry.get_stack(MODEL) == winners[0]


async def test_revisions_increase_monotonically(registry: Registry) -> None:
    v1, v2 = await _patches(registry)
    revisions = []
    for i in range(6):
        current = await registry.get_revision(MODEL)
        stack = await registry.set_stack(MODEL, [(v1, v2)[i % 2]], expected_revision=current)
        revisions.append(stack.revision)
    revisions.append((await registry.rollback(MODEL)).revision)
    assert revisions == list(range(1, 8))


async def test_rollback_restores_previous_entries_with_higher_revision(
    registry: Registry,
) -> None:
    v1, v2 = await _patches(registry)
    await registry.set_stack(MODEL, [v1], expected_revision=0)
    await registry.set_stack(MODEL, [v1, v2], expected_revision=1)
    rolled = await registry.rollback(MODEL)
    assert rolled.entries == [v1] and rolled.revision == 3
    assert await registry.get_stack(MODEL) == rolled
    again = await registry.rollback(MODEL, expected_revision=3)
    assert again.entries == [v1, v2] and again.revision == 4


async def test_rollback_of_first_activation_restores_empty_stack(registry: Registry) -> None:
    v1, _ = await _patches(registry)
    await registry.set_stack(MODEL, [v1], expected_revision=0)
    rolled = await registry.rollback(MODEL)
    assert (rolled.entries, rolled.revision) == ([], 2)


async def test_rollback_without_history_is_conflict(registry: Registry) -> None:
    with pytest.raises(Conflict) as info:
        await registry.rollback(MODEL)
    assert not isinstance(info.value, StackConflict)


async def test_rollback_with_stale_revision_raises_stack_conflict(registry: Registry) -> None:
    v1, v2 = await _patches(registry)
    await registry.set_stack(MODEL, [v1], expected_revision=0)
    await registry.set_stack(MODEL, [v2], expected_revision=1)
    with pytest.raises(StackConflict):
        await registry.rollback(MODEL, expected_revision=1)
    assert (await registry.get_stack(MODEL)).entries == [v2]


async def test_history_lists_previous_stacks_newest_first(registry: Registry) -> None:
    v1, v2 = await _patches(registry)
    for revision, entries in enumerate([[v1], [v2], [v1, v2]]):
        await registry.set_stack(MODEL, entries, expected_revision=revision)
    history = await registry.history(MODEL)
    assert [s.revision for s in history] == [2, 1, 0]
    assert [s.revision for s in await registry.history(MODEL, limit=1)] == [2]


async def test_set_stack_with_unknown_patch_or_version_is_not_found(registry: Registry) -> None:
    await _patches(registry, count=1)
    for entry in (StackEntry(patch="race", version=2), StackEntry(patch="nope", version=1)):
        with pytest.raises(PatchNotFound):
            await registry.set_stack(MODEL, [entry], expected_revision=0)
    assert await registry.get_revision(MODEL) == 0


async def test_set_stack_for_other_model_than_manifest_is_bad_request(
    registry: Registry,
) -> None:
    v1, _ = await _patches(registry)
    with pytest.raises(BadRequest):
        await registry.set_stack("other-model", [v1], expected_revision=0)
    assert await registry.get_revision("other-model") == 0


async def test_set_stack_refuses_duplicates_and_mismatched_classes(registry: Registry) -> None:
    v1, _ = await _patches(registry)
    with pytest.raises(BadRequest):
        await registry.set_stack(MODEL, [v1, v1], expected_revision=0)
    spec = make_spec(MODEL, classes=["a", "b", "c"])
    await registry.register_version("sex", spec, b"three-class", status=SERVABLE)
    with pytest.raises(BadRequest, match="class order"):
        await registry.set_stack(MODEL, [v1, StackEntry(patch="sex", version=1)], 0)
