"""Redis written by someone without the signing key (or a trainer that skipped the checks): no
replica may serve anything but the last verified stack, and every refusal must be visible.

Each case edits Redis through the key names of ``RegistryKeys`` (or sends a PUT), then for a few
poll intervals asks every replica for predictions and checks each answer against the ledger's
last verified revision — revision, patches and numbers. ``counted``: the replicas'
``eraser_hotload_total{outcome="failure"}`` rose for a published record, and a PUT naming the
bad version was refused with a 4xx. A verified PUT then restores a clean state for the next case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import redis

from bench.common import MODEL
from bench.reliability import observe
from bench.reliability.patches import Entry, Patches, random_patch, wait_served
from bench.reliability.system import POLL_INTERVAL_S, System
from service.registry.keys import RegistryKeys
from service.registry.models import REJECTED, Stack, StackEntry, StackEvent, VersionStatus
from service.registry.signing import canonical_json, sign

WATCH_S = 4 * POLL_INTERVAL_S  # pub/sub is immediate; the poll comes within one interval
PROBE_S = 0.05


@dataclass
class Bench:
    """What every case needs: the system, Redis as an attacker holds it, our patches."""

    system: System
    patches: Patches
    rows: np.ndarray
    redis: redis.Redis
    keys: RegistryKeys
    pool: list[Entry] = field(default_factory=list)
    verified: int = 0  # the last revision activated through the API

    def counter(self) -> int:
        return int(self.redis.get(self.keys.stack_revision(MODEL)) or 0)

    def publish(self, record: dict[str, Any] | bytes, revision: int) -> None:
        """Write a stack record and its revision, then announce it, as the registry would."""
        raw = record if isinstance(record, bytes) else orjson.dumps(record)
        self.redis.set(self.keys.stack(MODEL), raw)
        self.redis.set(self.keys.stack_revision(MODEL), revision)
        event = StackEvent(model=MODEL, revision=revision).model_dump_json()
        self.redis.publish(self.keys.events_channel(), event)

    def put(self, entries: list[dict[str, Any]]) -> int:
        """A PUT naming ``entries``; its status code."""
        body = {"entries": entries, "expected_revision": self.counter(), "reason": "tamper"}
        with self.system.admin() as admin:
            return admin.put(f"/models/{MODEL}/stack", json=body).status_code

    def restore(self) -> None:
        """A verified stack again, on top of whatever the counter says now."""
        with self.system.admin() as admin:
            self.verified, _ = self.patches.put_stack(
                admin, [self.pool[0]], expected=self.counter(), floor=self.verified + 1
            )
        wait_served(self.system.gateways, self.system.creds.admin_headers, self.verified)

    def signed_stack(self, entries: list[StackEntry], revision: int) -> bytes:
        """A correctly signed record (what only a holder of the signing key can write)."""
        stack = Stack(model=MODEL, revision=revision, entries=entries, reason="tamper")
        key = self.system.creds.signing.encode()
        signed = stack.model_copy(update={"signature": sign(key, stack.signed_payload())})
        return canonical_json(signed.model_dump(mode="json"))


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    bench = Bench(system, patches, rows[:4], system.redis.client(), RegistryKeys(system.prefix))
    with system.admin() as admin:
        bench.pool = [patches.register(admin, f"tm-{i}", seed=300 + i) for i in range(4)]
    bench.restore()
    cases: dict[str, dict[str, Any]] = {}
    for name, case in CASES.items():
        cases[name] = _judge(bench, case)
        bench.restore()
    bench.redis.close()
    return {
        "scenarios": cases,
        "served_tampered": sum(c["served_tampered"] for c in cases.values()),
        "failed": sum(c["failed_predictions"] for c in cases.values()),
        "counted": sum(c["counted"] for c in cases.values()),
        "uncounted": sum(not c["counted"] for c in cases.values()),
        "cases": len(cases),
    }


def _judge(bench: Bench, case: Callable[[Bench], dict[str, Any]]) -> dict[str, Any]:
    """Run one case and watch every replica's answers while they poll."""
    failures = observe.hotload_failures(bench.system.gateways)
    done = case(bench)
    wrong, failed = _watch(bench)
    rose = observe.hotload_failures(bench.system.gateways) - failures
    refused = [c for c in done.get("put_status", []) if 400 <= c < 500]
    published = done.get("published", True)
    counted = (rose > 0 or not published) and len(refused) == len(done.get("put_status", []))
    return {
        "served_tampered": bool(wrong),
        "counted": bool(counted),
        "failed_predictions": failed,
        "hotload_failures_added": rose,
        "tampered_examples": sorted(set(wrong))[:3],
        **done,
    }


def _watch(bench: Bench) -> tuple[list[str], int]:
    """Every answer of every replica for ``WATCH_S`` that is not the last verified stack, and
    how many predictions failed meanwhile (not tampered, but not served either)."""
    body = orjson.dumps({"model": MODEL, "instances": bench.rows.tolist(), "return_raw": True})
    headers = {**bench.system.creds.predict_headers, "Content-Type": "application/json"}
    wrong: list[str] = []
    failed = 0
    deadline = time.monotonic() + WATCH_S
    with httpx.Client(headers=headers, timeout=10) as client:
        while time.monotonic() < deadline:
            for url in bench.system.gateways:
                r = client.post(f"{url}/predict", content=body)
                if r.status_code != 200:
                    failed += 1
                    continue
                answer = r.json()
                if answer["revision"] != bench.verified:
                    wrong.append(f"served revision {answer['revision']}, not {bench.verified}")
                elif why := bench.patches.ledger.check(answer, bench.rows):
                    wrong.append(why)
            time.sleep(PROBE_S)
    return wrong, failed


def edited_stack(bench: Bench) -> dict[str, Any]:
    """Entries and α rewritten in the stored record, signature kept, revision bumped."""
    record = orjson.loads(bench.redis.get(bench.keys.stack(MODEL)))
    record |= {"revision": bench.verified + 1,
               "entries": [{"patch": bench.pool[1].patch, "version": 1, "alpha": 3.0}]}  # fmt: skip
    bench.publish(record, bench.verified + 1)
    return {}


def forged_status(bench: Bench) -> dict[str, Any]:
    """A version marked rejected (signed), then set to validated with HSET; then a PUT naming
    it, and a correctly signed stack naming it (a trainer with the key that skipped checks)."""
    target = bench.pool[2]
    status = VersionStatus(status=REJECTED, reason="biased in production")
    key = bench.system.creds.signing.encode()
    mapping = status.as_mapping(sign(key, status.signed_payload(target.patch, target.version)))
    status_key = bench.keys.status(target.patch, target.version)
    bench.redis.delete(status_key)
    bench.redis.hset(status_key, mapping=mapping)
    bench.redis.hset(status_key, mapping={"status": "validated", "reason": "trust me"})
    code = bench.put([target.api()])
    revision = bench.counter() + 1
    bench.publish(bench.signed_stack([StackEntry(**target.api())], revision), revision)
    return {"put_status": [code]}


def huge_alpha(bench: Bench) -> dict[str, Any]:
    """α = 1e6: through the API, and written into the record by hand."""
    entry = {**bench.pool[1].api(), "alpha": 1e6}
    code = bench.put([entry])
    record = orjson.loads(bench.redis.get(bench.keys.stack(MODEL)))
    revision = bench.counter() + 1
    bench.publish(record | {"revision": revision, "entries": [entry]}, revision)
    return {"put_status": [code]}


def alpha_above_max(bench: Bench) -> dict[str, Any]:
    """α = 9: inside the schema's range, above ``runtime.max_alpha`` — through the API, and in a
    correctly signed record (the replicas' own range check is the last line)."""
    entry = {**bench.pool[1].api(), "alpha": 9.0}
    code = bench.put([entry])
    revision = bench.counter() + 1
    bench.publish(bench.signed_stack([StackEntry(**entry)], revision), revision)
    return {"put_status": [code]}


def revision_mismatch(bench: Bench) -> dict[str, Any]:
    """The revision key moved on while the signed stack record stayed where it was."""
    revision = bench.counter() + 1
    bench.redis.set(bench.keys.stack_revision(MODEL), revision)
    bench.redis.publish(bench.keys.events_channel(),
                        StackEvent(model=MODEL, revision=revision).model_dump_json())  # fmt: skip
    return {}


def replayed_stack(bench: Bench) -> dict[str, Any]:
    """An older, correctly signed record written back: first with the counter bumped past the
    served revision, then with the counter itself sent back to the old revision."""
    old = bench.redis.get(bench.keys.stack(MODEL))
    bench.restore()  # a newer verified revision, so the one in ``old`` is a replay
    bench.publish(old, bench.counter() + 1)
    time.sleep(WATCH_S / 2)
    bench.publish(old, orjson.loads(old)["revision"])
    return {}


def tampered_blob(bench: Bench) -> dict[str, Any]:
    """A registered version's blob replaced in Redis (by a valid ONNX patch), then a PUT."""
    target = bench.pool[3]
    with bench.system.admin() as admin:
        manifest = admin.get(f"/patches/{target.patch}/versions/{target.version}").json()
    bench.redis.set(bench.keys.blob(manifest["manifest"]["sha256"]), random_patch(999))
    return {"put_status": [bench.put([target.api()])], "published": False}


CASES: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "edited_stack": edited_stack,
    "forged_status": forged_status,
    "huge_alpha": huge_alpha,
    "alpha_above_max": alpha_above_max,
    "revision_mismatch": revision_mismatch,
    "replayed_stack": replayed_stack,
    "tampered_blob": tampered_blob,
}
