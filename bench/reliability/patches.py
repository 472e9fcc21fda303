"""Random ONNX patches, their registration and activation, and the ground truth every answer is
checked against.

The ``Ledger`` records, for every revision this run activated through the API, which blobs at
which α it holds. An answer is right only if it names a revision in the ledger, lists that
revision's patches and carries ``softmax(log raw − Σ α log G(x))`` computed here with ONNX
Runtime from the blobs we uploaded. Anything else — a revision we never made, other patches, other
numbers — is either a mismatch or something served that no verified stack holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson

from bench.common import MODEL, class_names
from bench.onnx_patches import mlp_to_onnx
from blackbox.data import FEATURE_NAMES
from service.eraser_math import fair_log_probs, softmax_from_log
from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT

TOLERANCE = 1e-5  # probabilities: float32 patch outputs, batched or not, times α ≤ 4


def random_patch(seed: int, hidden: int = 8) -> bytes:
    """A small random ReLU MLP patch; distinct seeds give distinct, checkable outputs."""
    rng = np.random.default_rng(seed)
    n, k = len(FEATURE_NAMES), len(class_names())
    weights = [rng.standard_normal((n, hidden)) * 0.3, rng.standard_normal((hidden, k))]
    biases = [rng.standard_normal(hidden), rng.standard_normal(k)]
    return mlp_to_onnx(weights, biases, mean=None, std=None)


def manifest(**extra: Any) -> dict[str, Any]:
    return {"kind": "custom", "model": MODEL, "classes": class_names(),
            "input_shape": [len(FEATURE_NAMES)], "training_config": {"bench": "reliability"},
            **extra}  # fmt: skip


def register(admin: httpx.Client, name: str, blob: bytes) -> int:
    """``POST /patches/{name}/versions`` (status ``approved``); the version number."""
    r = admin.post(
        f"/patches/{name}/versions",
        data={"manifest": orjson.dumps(manifest()).decode()},
        files={"artifact": (f"{name}.onnx", blob, "application/octet-stream")},
    )
    r.raise_for_status()
    return int(r.json()["version"])


class PutFailed(RuntimeError):
    """A ``PUT /models/{m}/stack`` that was not accepted, with its status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"PUT stack: {status} {text[:300]}")
        self.status, self.text = status, text


@dataclass(frozen=True)
class Entry:
    """One stack entry as served, and which of our blobs it is."""

    patch: str
    version: int
    alpha: float
    blob: bytes

    def api(self) -> dict[str, Any]:
        return {"patch": self.patch, "version": self.version, "alpha": self.alpha}

    def named(self) -> dict[str, Any]:
        """As an answer's ``patches`` names it."""
        return {"name": self.patch, "version": self.version, "alpha": self.alpha}


@dataclass
class Ledger:
    """Every revision activated through the API in this run, with ORT sessions of its blobs."""

    stacks: dict[int, list[Entry]] = field(default_factory=lambda: {0: []})
    _sessions: dict[bytes, ort.InferenceSession] = field(default_factory=dict)

    def record(self, revision: int, entries: list[Entry]) -> None:
        self.stacks[revision] = list(entries)

    def session(self, blob: bytes) -> ort.InferenceSession:
        if blob not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self._sessions[blob] = ort.InferenceSession(
                blob, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[blob]

    def expected(self, revision: int, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Fair probabilities for ``rows`` whose upstream probabilities were ``raw``."""
        entries = self.stacks[revision]
        x = np.asarray(rows, dtype=np.float32)
        log_gs = [self.session(e.blob).run([PATCH_OUTPUT], {PATCH_INPUT: x})[0] for e in entries]
        log_p = np.log(np.asarray(raw, dtype=np.float64))
        return softmax_from_log(fair_log_probs(log_p, log_gs, [e.alpha for e in entries]))

    def check(self, answer: dict[str, Any], rows: np.ndarray) -> str | None:
        """None if ``answer`` (a ``/predict`` body with ``return_raw``) is what the revision it
        names must give for ``rows``; else what is wrong with it."""
        revision = answer.get("revision")
        if revision not in self.stacks:
            return f"revision {revision} was never activated through the API"
        entries = self.stacks[revision]
        if answer.get("patches") != [e.named() for e in entries]:
            return f"revision {revision} answered with patches {answer.get('patches')}"
        if answer.get("debiased") != bool(entries):
            return f"revision {revision} answered debiased={answer.get('debiased')}"
        classes = class_names()
        preds = answer["predictions"]
        raw = np.array([[p["raw_probabilities"][c] for c in classes] for p in preds])
        got = np.array([[p["probabilities"][c] for c in classes] for p in preds])
        diff = float(np.max(np.abs(got - self.expected(revision, rows, raw))))
        if diff > TOLERANCE:
            return f"revision {revision}: probabilities off by {diff:.3g}"
        return None


@dataclass
class Patches:
    """The blobs this run uploads, by name, and the ledger of what was activated with them."""

    ledger: Ledger = field(default_factory=Ledger)
    blobs: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def register(self, admin: httpx.Client, name: str, seed: int) -> Entry:
        blob = random_patch(seed)
        version = register(admin, name, blob)
        self.blobs[(name, version)] = blob
        return Entry(name, version, 1.0, blob)

    def put_stack(
        self,
        admin: httpx.Client,
        entries: list[Entry],
        floor: int | None = None,
        expected: int | None = None,
    ) -> tuple[int, float]:
        """Activate ``entries`` by compare-and-set on ``expected`` (default: the registry's
        current revision); the new revision and the monotonic time the PUT was accepted.
        Recorded in the ledger."""
        body: dict[str, Any] = {
            "entries": [e.api() for e in entries],
            "expected_revision": registry_revision(admin) if expected is None else expected,
            "reason": "bench.reliability",
        }
        if floor is not None:
            body["revision_floor"] = floor
        r = admin.put(f"/models/{MODEL}/stack", json=body)
        accepted = time.monotonic()
        if r.status_code != 200:
            raise PutFailed(r.status_code, r.text)
        revision = int(r.json()["stack"]["revision"])
        self.ledger.record(revision, entries)
        return revision, accepted


def registry_revision(admin: httpx.Client) -> int:
    """The registry's active revision, as a PUT must name it (``expected_revision``). After a
    tampered record this is a 409; those scenarios read the counter from Redis instead."""
    r = admin.get(f"/models/{MODEL}/stack")
    if r.status_code != 200:
        raise RuntimeError(f"GET stack: {r.status_code} {r.text[:200]}")
    return int(r.json()["stack"]["revision"])


def served_revisions(urls: list[str], headers: dict[str, str]) -> list[int | None]:
    """What each replica serves (``served_revision`` of ``GET /models/{m}/stack``); None for a
    replica that cannot say (its Redis is down, or the stored record is refused)."""
    out: list[int | None] = []
    for url in urls:
        try:
            r = httpx.get(f"{url}/models/{MODEL}/stack", headers=headers, timeout=5)
            body = r.json()
            served = body.get("served_revision", body.get("error", {}).get("served_revision"))
            out.append(None if served is None else int(served))
        except (httpx.HTTPError, ValueError):
            out.append(None)
    return out


def wait_served(
    urls: list[str], headers: dict[str, str], revision: int, timeout_s: float = 30.0,
    poll_s: float = 0.01,
) -> float:  # fmt: skip
    """Poll every replica until each serves ``revision``; the monotonic time they all did.
    Replicas that got there stop being polled (the poll is load too)."""
    pending = set(range(len(urls)))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(headers=headers, timeout=5) as client:
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                r = client.get(f"{urls[i]}/models/{MODEL}/stack")
                if r.status_code == 200 and r.json().get("served_revision") == revision:
                    pending.discard(i)
            if pending:
                time.sleep(poll_s)
    if pending:
        raise TimeoutError(f"replicas {sorted(pending)} not serving revision {revision}")
    return time.monotonic()
