"""Every Redis key and channel name the registry uses, in one place.

Layout (``p`` is the prefix, ``eraser`` by default)::

    p:blob:{sha256}                    STRING  patch artifact bytes, content-addressed, shared
    p:patches                          SET     patch names that have at least one manifest
    p:patch_counter:{name}             STRING  last version number handed out (INCR)
    p:manifest:{name}:{version}        STRING  signed manifest JSON, immutable (SET NX)
    p:status:{name}:{version}          HASH    mutable status/reason/updated_at, signed itself
    p:stack:{model}                    STRING  active stack JSON (Stack), signed
    p:stack_revision:{model}           STRING  active stack revision, for cheap polling
    p:stack_history:{model}            LIST    previous stacks' JSON, newest first
    p:events                           channel StackEvent JSON after each compare-and-set
    p:calibration:{sha256}             STRING  uploaded calibration file bytes, content-addressed
    p:calibration_meta:{sha256}        STRING  CalibrationMeta JSON (format, rows, columns, ...)
    p:report:{name}:{version}          HASH    training report: json, png (with the manifest)
    p:job_version:{job_id}:{name}      STRING  version a training job registered (idempotence)
    p:bb_cache:{sha256}                STRING  cached black-box outputs, MAC-authenticated, expiring
    p:audits                           ZSET    audit ids by submission time (seconds)
    p:audit:{id}                       HASH    counterfactual audit: spec, created_at, result, png
    p:audit_input:{sha256}             STRING  an audit's uploaded data or pairs file, expiring

The kind of key comes before the free-form part, so a model name containing ``:`` can never
collide with another kind of key. Patch names match ``NAME_PATTERN`` (no ``:``), so
``manifest:{name}:{version}`` is unambiguous too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    """Builds key names from one prefix, so tests and deployments can share a Redis."""

    prefix: str = "eraser"

    def blob(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}"

    def patches(self) -> str:
        return f"{self.prefix}:patches"

    def version_counter(self, name: str) -> str:
        return f"{self.prefix}:patch_counter:{name}"

    def manifest(self, name: str, version: int) -> str:
        return f"{self.prefix}:manifest:{name}:{version}"

    def status(self, name: str, version: int) -> str:
        return f"{self.prefix}:status:{name}:{version}"

    def stack(self, model: str) -> str:
        return f"{self.prefix}:stack:{model}"

    def stack_revision(self, model: str) -> str:
        return f"{self.prefix}:stack_revision:{model}"

    def stack_history(self, model: str) -> str:
        return f"{self.prefix}:stack_history:{model}"

    def calibration(self, sha256: str) -> str:
        return f"{self.prefix}:calibration:{sha256}"

    def calibration_meta(self, sha256: str) -> str:
        return f"{self.prefix}:calibration_meta:{sha256}"

    def report(self, name: str, version: int) -> str:
        return f"{self.prefix}:report:{name}:{version}"

    def job_version(self, job_id: str, name: str) -> str:
        return f"{self.prefix}:job_version:{job_id}:{name}"

    def blackbox_cache(self, sha256: str) -> str:
        return f"{self.prefix}:bb_cache:{sha256}"

    def audits(self) -> str:
        return f"{self.prefix}:audits"

    def audit(self, audit_id: str) -> str:
        return f"{self.prefix}:audit:{audit_id}"

    def audit_input(self, sha256: str) -> str:
        return f"{self.prefix}:audit_input:{sha256}"

    def events_channel(self) -> str:
        return f"{self.prefix}:events"
