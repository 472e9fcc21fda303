"""The patch registry on Redis: signed immutable patch versions and compare-and-set stacks.

This is the one API that both the gateway (reads, hot-loads) and the offline trainer (registers,
activates) use, so the integrity rules live here once: a manifest is accepted only when its HMAC
signature verifies under the shared key, and a blob only when its sha256 equals the manifest's.
Key names live in ``keys.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from service.errors import (
    BadRequest,
    Conflict,
    IntegrityError,
    InvalidStoredRecord,
    PatchNotFound,
    PatchRejected,
    RegistryError,
    StackConflict,
)
from service.registry.keys import RegistryKeys
from service.registry.models import (
    NAME_PATTERN,
    SERVABLE,
    UNVERIFIED,
    PatchManifest,
    PatchReport,
    PatchSpec,
    Stack,
    StackEntry,
    StackEvent,
    VersionStatus,
    utcnow,
)
from service.registry.signing import canonical_json, sha256_hex, sign, verify

log = logging.getLogger(__name__)

HISTORY_LENGTH = 100
MAX_STACK_ALPHA = 10.0  # the schema's bound (StackEntry); deployments lower it
DEFAULT_STATUS = "registered"
UNVERIFIED_REASON = (
    "the stored status fails its signature (edited outside the registry): it counts as neither "
    "validated nor approved"
)
_NAME_RE = re.compile(NAME_PATTERN)

# Compare-and-set of a model's stack, atomic because Redis runs a script without interleaving.
# KEYS: stack, revision, history.  ARGV: expected revision, new stack JSON, JSON of the empty
# revision-0 stack (pushed to history when no stack was ever set, so the first activation can be
# rolled back), history length, events channel, event JSON, new revision (expected + 1, or more
# after a data loss: see ``set_stack``).  Returns {1, new} or {0, current}.
_CAS_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local previous = redis.call('GET', KEYS[1]) or ARGV[3]
redis.call('LPUSH', KEYS[3], previous)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, tonumber(ARGV[7])}
"""

# Registration of a version, atomic: the manifest only if its number is free (SET NX), and with
# it — never without it — the name, status, report and job marker. (MULTI/EXEC would run the
# rest even when SET NX fails.) KEYS: manifest, patches, status, report, job marker.
# ARGV: manifest JSON, name, version, status, reason, updated_at, signature, report json,
# report png, write-marker flag; an empty string skips that part.
_REGISTER_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], 'status', ARGV[4], 'reason', ARGV[5], 'updated_at', ARGV[6],
             'signature', ARGV[7])
end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[4], 'json', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[4], 'png', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('SET', KEYS[5], ARGV[3]) end
return 1
"""


def _check_name(name: str) -> None:
    """Patch names become part of Redis keys, so only the safe alphabet is accepted."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise BadRequest(f"invalid patch name {name!r}: must match {NAME_PATTERN}", name=name)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _dump(model: Any) -> bytes:
    return canonical_json(model.model_dump(mode="json"))


class Registry:
    """Patch versions, stacks, history and change events for every model, in one Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        signing_key: bytes,
        prefix: str = "eraser",
        max_alpha: float = MAX_STACK_ALPHA,
    ) -> None:
        """Blobs are binary, so the client must return bytes (``decode_responses=False``).
        ``max_alpha`` is the largest α a stack may carry (``runtime.max_alpha``): replicas refuse
        more, so the registry refuses to commit it, whoever asks (an operator, a training job)."""
        if not signing_key:
            raise ValueError("the registry needs a non-empty signing key")
        if redis.get_encoder().decode_responses:
            raise ValueError("the registry needs a Redis client with decode_responses=False")
        self._redis = redis
        self._key = bytes(signing_key)
        self._max_alpha = max_alpha
        self._keys = RegistryKeys(prefix)
        self._cas = redis.register_script(_CAS_SCRIPT)
        self._register = redis.register_script(_REGISTER_SCRIPT)

    @property
    def keys(self) -> RegistryKeys:
        """Key names, for tools and tests that inspect Redis directly."""
        return self._keys

    # ------------------------------------------------------------------ patch versions

    async def register_version(
        self,
        name: str,
        spec: PatchSpec,
        blob: bytes,
        *,
        status: VersionStatus | None = None,
        report: PatchReport | None = None,
        job_id: str | None = None,
    ) -> PatchManifest:
        """Store ``blob`` and a signed manifest as the next version of ``name``.

        The manifest, its status, its report and the job marker are written by one Lua script,
        so a trainer killed at any point leaves either a complete version or none. The blob is
        written first (content-addressed, harmless alone); a crash after INCR only leaves a gap
        in the version numbers, which readers skip. With ``job_id``, a retried job gets back the
        version its earlier attempt registered instead of a duplicate.
        """
        _check_name(name)
        if not blob:
            raise BadRequest("a patch blob must not be empty", name=name)
        if job_id is not None and (done := await self._job_version(job_id, name)) is not None:
            return done
        digest = await self._put_blob(blob)
        version = int(await self._redis.incr(self._keys.version_counter(name)))
        manifest = self._signed_manifest(name, version, spec, digest, len(blob))
        keys = [
            self._keys.manifest(name, version),
            self._keys.patches(),
            self._keys.status(name, version),
            self._keys.report(name, version),
            self._keys.job_version(job_id or "-", name),
        ]
        status_args = self._status_args(name, version, status)
        report_args = [report.json_bytes, report.png or b""] if report else ["", ""]
        args = [_dump(manifest), name, version, *status_args, *report_args, job_id or ""]
        if not await self._register(keys=keys, args=args):
            raise RegistryError(f"manifest {name} v{version} already exists", name=name)
        return manifest

    def _status_args(self, name: str, version: int, status: VersionStatus | None) -> list[str]:
        """status, reason, updated_at, signature for the registration script ("" × 4: none)."""
        if status is None:
            return ["", "", "", ""]
        mapping = self._signed_status(name, version, status)
        return [mapping[k] for k in ("status", "reason", "updated_at", "signature")]

    def _signed_status(self, name: str, version: int, status: VersionStatus) -> dict[str, str]:
        """The status hash as stored: the verdict and its signature, bound to (name, version)."""
        return status.as_mapping(sign(self._key, status.signed_payload(name, version)))

    async def _job_version(self, job_id: str, name: str) -> PatchManifest | None:
        raw = await self._redis.get(self._keys.job_version(job_id, name))
        return None if raw is None else await self.get_manifest(name, int(raw))

    async def get_report(self, name: str, version: int) -> PatchReport:
        """The training report stored with a version; PatchNotFound if it has none."""
        await self._require_manifest(name, version)
        stored = await self._redis.hgetall(self._keys.report(name, version))
        if not stored:
            raise PatchNotFound(
                f"patch {name!r} version {version} has no training report",
                patch=name,
                version=version,
            )
        return PatchReport.from_mapping({_text(k): v for k, v in stored.items()})

    async def _put_blob(self, blob: bytes) -> str:
        """Content-addressed write; identical content is stored once.

        An existing value under the address that does not hash to it (corrupted or tampered) is
        replaced, since the correct content is in hand.
        """
        digest = sha256_hex(blob)
        key = self._keys.blob(digest)
        if not await self._redis.set(key, blob, nx=True):
            existing = await self._redis.get(key)
            if existing is None or sha256_hex(existing) != digest:
                await self._redis.set(key, blob)
        return digest

    def _signed_manifest(
        self, name: str, version: int, spec: PatchSpec, digest: str, size: int
    ) -> PatchManifest:
        """Build, JSON-round-trip, then sign: the signature covers exactly what is stored."""
        fields = spec.model_dump(include=set(PatchSpec.model_fields))
        unsigned = PatchManifest(
            **fields,
            name=name,
            version=version,
            sha256=digest,
            size_bytes=size,
            created_at=utcnow(),
        )
        manifest = PatchManifest.model_validate_json(_dump(unsigned))
        return manifest.model_copy(update={"signature": sign(self._key, manifest.signed_payload())})

    async def list_patches(self) -> list[str]:
        """Names with at least one registered version, sorted."""
        names = await self._redis.smembers(self._keys.patches())
        return sorted(_text(n) for n in names)

    async def list_versions(self, name: str) -> list[PatchManifest]:
        """Every verified manifest of ``name``, oldest first; PatchNotFound for unknown names."""
        top = await self._top_version(name)
        versions = range(1, top + 1)
        raws = await self._redis.mget([self._keys.manifest(name, v) for v in versions])
        return [
            self._verified(raw, name, v)
            for v, raw in zip(versions, raws, strict=True)
            if raw is not None
        ]

    async def latest_version(self, name: str) -> PatchManifest:
        """The highest registered version (skipping numbers still being written)."""
        for version in range(await self._top_version(name), 0, -1):
            raw = await self._redis.get(self._keys.manifest(name, version))
            if raw is not None:
                return self._verified(raw, name, version)
        raise PatchNotFound(f"patch {name!r} has no versions", patch=name)

    async def _top_version(self, name: str) -> int:
        _check_name(name)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self._keys.patches(), name)
            pipe.get(self._keys.version_counter(name))
            known, counter = await pipe.execute()
        if not known:
            raise PatchNotFound(f"patch {name!r} not found", patch=name)
        return int(counter or 0)

    async def get_manifest(self, name: str, version: int) -> PatchManifest:
        """The manifest of (name, version), refused with IntegrityError unless its signature
        verifies and it names itself as (name, version)."""
        _check_name(name)
        raw = await self._redis.get(self._keys.manifest(name, version))
        if raw is None:
            raise PatchNotFound(
                f"patch {name!r} version {version} not found", patch=name, version=version
            )
        return self._verified(raw, name, version)

    def _verified(self, raw: bytes, name: str, version: int) -> PatchManifest:
        """Parse and check a stored manifest; a copy moved to another key is also refused."""
        where = {"patch": name, "version": version}
        try:
            manifest = PatchManifest.model_validate_json(raw)
        except ValidationError as exc:
            raise IntegrityError(f"manifest {name} v{version} is unreadable", **where) from exc
        if not verify(self._key, manifest.signed_payload(), manifest.signature):
            raise IntegrityError(f"manifest {name} v{version}: signature mismatch", **where)
        if (manifest.name, manifest.version) != (name, version):
            raise IntegrityError(
                f"manifest stored as {name} v{version} is signed as "
                f"{manifest.name} v{manifest.version}: identity mismatch",
                **where,
            )
        return manifest

    async def get_blob(self, manifest: PatchManifest) -> bytes:
        """The artifact bytes, refused unless they hash to ``manifest.sha256``."""
        where = {"patch": manifest.name, "version": manifest.version, "sha256": manifest.sha256}
        blob = await self._redis.get(self._keys.blob(manifest.sha256))
        if blob is None:
            raise IntegrityError(f"blob of {manifest.name} v{manifest.version} is missing", **where)
        if sha256_hex(blob) != manifest.sha256:
            raise IntegrityError(
                f"blob of {manifest.name} v{manifest.version}: hash mismatch", **where
            )
        return blob

    # ------------------------------------------------------------------ mutable status

    async def get_status(self, name: str, version: int) -> dict[str, str]:
        """``{"status": ..., "reason": ...}``: "registered" when none was written, "unverified"
        when the stored one fails its signature (it was edited outside the registry)."""
        await self._require_manifest(name, version)
        return await self._verified_status(name, version)

    async def set_status(self, name: str, version: int, status: VersionStatus) -> None:
        """Replace a version's verdict, signed (e.g. a version found biased in production is
        marked rejected, so that no stack or rollback can make it active again)."""
        await self._require_manifest(name, version)
        key = self._keys.status(name, version)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=self._signed_status(name, version, status))
            await pipe.execute()

    async def _verified_status(self, name: str, version: int) -> dict[str, str]:
        stored = await self._redis.hgetall(self._keys.status(name, version))
        if not stored:
            return {"status": DEFAULT_STATUS, "reason": ""}
        fields = {_text(k): _text(v) for k, v in stored.items()}
        try:
            status = VersionStatus.model_validate({k: v for k, v in fields.items() if k in
                                                   ("status", "reason", "updated_at")})  # fmt: skip
            intact = verify(self._key, status.signed_payload(name, version),
                            fields.get("signature", ""))  # fmt: skip
        except ValidationError:
            intact = False
        if not intact:
            log.warning("status of %s v%d fails its signature: unverified", name, version)
            return {"status": UNVERIFIED, "reason": UNVERIFIED_REASON}
        return {"status": status.status, "reason": status.reason}

    async def _require_manifest(self, name: str, version: int) -> None:
        _check_name(name)
        if not await self._redis.exists(self._keys.manifest(name, version)):
            raise PatchNotFound(
                f"patch {name!r} version {version} not found", patch=name, version=version
            )

    # ------------------------------------------------------------------ stacks

    async def get_stack(self, model: str) -> Stack:
        """The active stack; revision 0 with no entries when none was ever set.
        InvalidStoredRecord (409) when the stored record fails its schema or its signature."""
        raw = await self._redis.get(self._keys.stack(model))
        return Stack(model=model) if raw is None else self._stored_stack(raw, model, "active stack")

    async def get_revision(self, model: str) -> int:
        """The active revision in one GET: cheap enough for every replica to poll. Unsigned, so
        only a hint that something changed: what is served comes from the signed stack."""
        raw = await self._redis.get(self._keys.stack_revision(model))
        try:
            return int(raw or 0)
        except ValueError:
            raise InvalidStoredRecord(
                f"the stored revision of model {model!r} is not a number; PUT a new stack",
                model=model,
            ) from None

    async def set_stack(
        self,
        model: str,
        entries: Sequence[StackEntry],
        expected_revision: int,
        reason: str = "",
        revision_floor: int = 0,
    ) -> Stack:
        """Make ``entries`` the active stack of ``model`` if its revision is still
        ``expected_revision``; StackConflict (with ``current_revision``) otherwise.

        Entries are checked before the compare-and-set — each manifest's signature, its blob's
        hash, its signed status (validated or approved) — so nothing is committed that no
        replica could load. The new revision is ``expected_revision + 1``, or
        ``revision_floor`` if that is higher: replicas never go back to a lower revision than
        they served, so after Redis lost its data the first new stack must carry on from the
        revision they report.
        """
        checked = [StackEntry.model_validate(e) for e in entries]
        await self._check_entries(model, checked)
        return await self._compare_and_set(
            model, checked, expected_revision, reason, revision_floor
        )

    async def _check_entries(self, model: str, entries: list[StackEntry]) -> None:
        """Every entry must exist, verify, belong to ``model``, appear once and agree on classes."""
        pairs = [(e.patch, e.version) for e in entries]
        if len(set(pairs)) != len(pairs):
            raise BadRequest("a stack lists the same patch version twice", model=model)
        classes: list[str] | None = None
        for entry in entries:
            manifest = await self.get_manifest(entry.patch, entry.version)
            if manifest.model != model:
                raise BadRequest(
                    f"patch {entry.patch} v{entry.version} debiases model {manifest.model!r}, "
                    f"not {model!r}",
                    model=model,
                    patch=entry.patch,
                    version=entry.version,
                )
            if classes is not None and manifest.classes != classes:
                raise BadRequest("stack entries disagree on the class order", model=model)
            classes = manifest.classes
            if entry.alpha > self._max_alpha:
                raise BadRequest(
                    f"{entry.patch} v{entry.version}: α {entry.alpha:g} is above the configured "
                    f"maximum {self._max_alpha:g} (runtime.max_alpha)",
                    patch=entry.patch,
                )
            await self.require_servable(entry.patch, entry.version)
            await self.get_blob(manifest)  # present and matching its hash, or IntegrityError

    async def require_servable(self, name: str, version: int) -> None:
        """Only a version whose signed status is validated (by the gate) or approved (an
        operator's upload) may be active, rollback included; PatchRejected (409) otherwise."""
        verdict = await self._verified_status(name, version)
        if verdict["status"] not in SERVABLE:
            detail = f": {verdict['reason']}" if verdict["reason"] else ""
            raise PatchRejected(
                f"patch {name} v{version} is {verdict['status']}, not validated or "
                f"approved{detail}",
                patch=name,
                version=version,
                status=verdict["status"],
            )

    async def _compare_and_set(
        self,
        model: str,
        entries: list[StackEntry],
        expected_revision: int,
        reason: str,
        revision_floor: int = 0,
    ) -> Stack:
        """Write, record history and announce in one Lua script, so all or none happen."""
        if expected_revision < 0:
            raise BadRequest("expected_revision must be >= 0", model=model)
        new = self._signed_stack(
            Stack(
                model=model,
                revision=max(expected_revision + 1, revision_floor),
                entries=entries,
                updated_at=utcnow(),
                reason=reason,
            )
        )
        event = StackEvent(model=model, revision=new.revision)
        keys = [
            self._keys.stack(model),
            self._keys.stack_revision(model),
            self._keys.stack_history(model),
        ]
        args = [
            expected_revision,
            _dump(new),
            _dump(self._signed_stack(Stack(model=model))),
            HISTORY_LENGTH,
            self._keys.events_channel(),
            _dump(event),
            new.revision,
        ]
        won, revision = await self._cas(keys=keys, args=args)
        if not won:
            raise StackConflict(
                f"stack of {model!r} is at revision {revision}, not {expected_revision}",
                model=model,
                expected_revision=expected_revision,
                current_revision=int(revision),
            )
        return new

    async def rollback(
        self, model: str, expected_revision: int | None = None, reason: str = ""
    ) -> Stack:
        """Re-activate the stack that was active before the current one, as a new revision.

        Like ``kubectl rollout undo``, a second rollback returns to the stack the first one left.
        The first activation can be rolled back to the empty stack. Raises ``Conflict`` (409)
        when the model has no earlier stack, and StackConflict when ``expected_revision``
        (default: the revision read here) is no longer current.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.stack_revision(model))
            pipe.lindex(self._keys.stack_history(model), 0)
            raw_revision, raw_previous = await pipe.execute()
        current = int(raw_revision or 0)
        if expected_revision is not None and expected_revision != current:
            raise StackConflict(
                f"stack of {model!r} is at revision {current}, not {expected_revision}",
                model=model,
                expected_revision=expected_revision,
                current_revision=current,
            )
        if raw_previous is None:
            raise Conflict(f"model {model!r} has no earlier stack to roll back to", model=model)
        previous = self._stored_stack(raw_previous, model, "previous stack")
        why = reason or f"rollback to revision {previous.revision}"
        return await self.set_stack(model, previous.entries, current, why)

    async def history(self, model: str, limit: int = 20) -> list[Stack]:
        """Previously active stacks, newest first (at most ``HISTORY_LENGTH`` are kept)."""
        if limit <= 0:
            return []
        raws = await self._redis.lrange(self._keys.stack_history(model), 0, limit - 1)
        return [self._stored_stack(raw, model, "stack history entry") for raw in raws]

    def _signed_stack(self, stack: Stack) -> Stack:
        return stack.model_copy(update={"signature": sign(self._key, stack.signed_payload())})

    def _stored_stack(self, raw: bytes, model: str, what: str) -> Stack:
        """A stack record read back from Redis, which anyone with write access may have
        edited: its schema, its signature and its model are checked."""
        stack = _parsed_stack(raw, model, what)
        if not verify(self._key, stack.signed_payload(), stack.signature):
            raise InvalidStoredRecord(
                f"the stored {what} of model {model!r} fails its signature (edited outside the "
                "registry, or written by an older version); PUT a new stack to replace it",
                model=model,
            )
        if stack.model != model:
            raise InvalidStoredRecord(
                f"the stored {what} of model {model!r} is signed for model {stack.model!r}",
                model=model,
            )
        return stack

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[StackEvent]:
        """Yield every StackEvent published after subscription (all models).

        Pub/sub is at-most-once (messages published while disconnected are lost), so consumers
        also poll ``get_revision``. The subscription's connection is closed when the iterator is
        closed: use ``contextlib.aclosing`` or cancel the consuming task.
        """
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._keys.events_channel())
            while True:
                # A bounded wait keeps every read inside the client's socket timeout.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                event = _parse_event(message)
                if event is not None:
                    yield event
        finally:
            await pubsub.aclose()


def _parsed_stack(raw: bytes, model: str, what: str) -> Stack:
    """The schema check of a stored stack record; an edited one is a 409 that says what."""
    try:
        return Stack.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidStoredRecord(
            f"the stored {what} of model {model!r} is invalid ({where}: {first['msg']}); "
            "PUT a new stack to replace it",
            model=model,
        ) from None


def _parse_event(message: dict[str, Any] | None) -> StackEvent | None:
    """A StackEvent from a pub/sub message, or None for anything else (malformed is skipped)."""
    if message is None or message.get("type") != "message":
        return None
    try:
        return StackEvent.model_validate_json(message["data"])
    except ValidationError:
        log.warning("ignoring malformed stack event %r", message.get("data"))
        return None
