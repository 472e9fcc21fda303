"""Operator routes: registration refuses what no replica could serve; stacks are CAS-guarded."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi import FastAPI

from bench.onnx_patches import mlp_to_onnx
from tests.service.api.conftest import (
    ADMIN,
    MODEL,
    activate,
    random_patch,
    register_patch,
)


async def test_registered_versions_are_listed_signed_and_numbered(
    client: httpx.AsyncClient,
) -> None:
    for seed in (1, 2):
        r = await register_patch(client, "race", random_patch(seed), default_alpha=0.5)
        assert r.status_code == 201, r.text
    assert r.json()["version"] == 2 and len(r.json()["signature"]) == 64
    listed = (await client.get("/patches", headers=ADMIN)).json()
    assert listed == [{"name": "race", "latest_version": 2, "kind": "custom", "model": MODEL}]
    one = (await client.get("/patches/race/versions/1", headers=ADMIN)).json()
    assert one["manifest"]["version"] == 1 and one["status"]["status"] == "approved"
    assert "not judged by the validation gate" in one["status"]["reason"]
    assert (await client.get("/patches/race/versions/9", headers=ADMIN)).status_code == 404


async def test_unservable_artifacts_are_refused_and_not_stored(client: httpx.AsyncClient) -> None:
    three_class = mlp_to_onnx([random_weights(7, 3)], [[0.0, 0.0, 0.0]], None, None)
    cases = [
        (b"not an onnx model", {}, 422, "not a loadable ONNX model"),
        (three_class, {}, 422, "model needs [N, 2]"),
        (random_patch(1), {"input_shape": [8]}, 422, "takes input [8]"),
        (random_patch(1), {"classes": ["a", "b"]}, 422, "classes"),
        (random_patch(1), {"model": "other"}, 404, "unknown model"),
        (random_patch(1), {"kind": "magic"}, 422, "manifest.kind"),
        (b"", {}, 400, "empty"),
    ]
    for blob, overrides, status, reason in cases:
        r = await register_patch(client, "bad", blob, **overrides)
        assert r.status_code == status, (overrides, r.text)
        assert reason in r.json()["error"]["message"], r.text
    assert (await client.get("/patches", headers=ADMIN)).json() == []


async def test_stack_changes_are_compare_and_set_and_can_be_rolled_back(
    client: httpx.AsyncClient,
) -> None:
    await register_patch(client, "race", random_patch(1))
    await register_patch(client, "race", random_patch(2))
    first = await activate(client, [{"patch": "race", "version": 1}], expected_revision=0)
    assert first.status_code == 200 and first.json()["stack"]["revision"] == 1
    stale = await activate(client, [{"patch": "race", "version": 2}], expected_revision=0)
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "stack_revision_conflict"
    second = await activate(client, [{"patch": "race", "version": 2}], expected_revision=1)
    assert second.json()["served_revision"] == 2

    back = await client.post(f"/models/{MODEL}/stack/rollback", headers=ADMIN, json={})
    assert back.status_code == 200, back.text
    stack = back.json()["stack"]
    assert stack["revision"] == 3 and stack["entries"][0]["version"] == 1
    assert back.json()["served_revision"] == 3
    history = (await client.get(f"/models/{MODEL}/stack/history", headers=ADMIN)).json()
    assert [h["revision"] for h in history][:2] == [2, 1]


async def test_activating_an_unknown_version_is_a_404(client: httpx.AsyncClient) -> None:
    r = await activate(client, [{"patch": "ghost", "version": 1}], expected_revision=0)
    assert r.status_code == 404, r.text


def random_weights(n_in: int, n_out: int) -> list[list[float]]:
    return [[0.1 * (i - j) for j in range(n_out)] for i in range(n_in)]


async def test_an_oversized_artifact_is_a_413(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.settings.max_artifact_mb = 0.001
    r = await register_patch(client, "big", random_patch(1) + b"\0" * 2048)
    assert r.status_code == 413 and "limit is 0.001 MB" in r.json()["error"]["message"]
    assert (await client.get("/patches", headers=ADMIN)).json() == []


async def test_sessions_are_built_on_the_loader_thread_not_the_inference_pool(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's upload and the hot-load it triggers warm their sessions on the loader
    thread: the patch-inference pool (threads named ``patch_*``) stays free for requests."""
    import service.api.routes_admin as routes_admin
    import service.runtime.stack as stack

    threads: list[str] = []

    def recording(build):  # type: ignore[no-untyped-def]
        def build_and_note(*args, **kwargs):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return build(*args, **kwargs)

        return build_and_note

    monkeypatch.setattr(routes_admin, "build_session", recording(stack.build_session))
    monkeypatch.setattr(stack, "build_session", recording(stack.build_session))
    assert (await register_patch(client, "race", random_patch(3))).status_code == 201
    assert (await activate(client, [{"patch": "race", "version": 1}], 0)).status_code == 200
    assert len(threads) == 2  # the upload's check, then the hot-load
    assert all(name.startswith("patch-loader") for name in threads), threads


async def test_a_job_id_rq_would_refuse_is_a_404_not_a_500(client: httpx.AsyncClient) -> None:
    for job_id in ("ééé", "a" * 500, "x.y", "distill-0"):
        r = await client.get(f"/jobs/{job_id}", headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", r.text
