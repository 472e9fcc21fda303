"""Domain errors. Core code raises these; ``service.api.errors`` maps them to JSON in one place.

EraserError (500)
├── BadRequest (400) ─┬─ InvalidInstances (422)
│                    ├─ InvalidCalibrationSet (422): an upload that cannot train a patch
│                    └─ PayloadTooLarge (413)
├── Unauthorized (401), Forbidden (403)
├── NotFound (404) ─┬─ ModelNotFound
│                   ├─ PatchNotFound
│                   ├─ JobNotFound
│                   └─ CalibrationSetNotFound
├── Conflict (409) ─── StackConflict
├── RegistryError (500) ─── IntegrityError (hash or signature mismatch)
├── PatchLoadError (422): an artifact that cannot serve this model
├── PatchFailed (503): a patch raised at request time
└── UpstreamError (502) ─┬─ UpstreamTimeout (504)
                         ├─ UpstreamUnavailable (502): refused / reset / DNS
                         ├─ UpstreamStatus (502): non-2xx answer
                         ├─ UpstreamBadResponse (502): unparseable, wrong K, NaN
                         └─ CircuitOpen (503)
"""

from __future__ import annotations

from typing import Any, ClassVar


class EraserError(Exception):
    """Base: carries the HTTP status and a stable machine-readable code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(EraserError):
    status_code = 400
    code = "bad_request"


class InvalidInstances(BadRequest):
    status_code = 422
    code = "invalid_instances"


class InvalidCalibrationSet(BadRequest):
    status_code = 422
    code = "invalid_calibration_set"


class PayloadTooLarge(BadRequest):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(EraserError):
    status_code = 401
    code = "unauthorized"


class Forbidden(EraserError):
    status_code = 403
    code = "forbidden"


class NotFound(EraserError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PatchNotFound(NotFound):
    code = "patch_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class CalibrationSetNotFound(NotFound):
    code = "calibration_set_not_found"


class Conflict(EraserError):
    status_code = 409
    code = "conflict"


class StackConflict(Conflict):
    code = "stack_revision_conflict"


class RegistryError(EraserError):
    code = "registry_error"


class IntegrityError(RegistryError):
    code = "artifact_integrity"


class PatchLoadError(EraserError):
    status_code = 422
    code = "patch_unloadable"


class PatchFailed(EraserError):
    status_code = 503
    code = "patch_failed"


class UpstreamError(EraserError):
    status_code = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamStatus(UpstreamError):
    code = "upstream_status"


class UpstreamBadResponse(UpstreamError):
    code = "upstream_bad_response"


class CircuitOpen(UpstreamError):
    status_code = 503
    code = "upstream_circuit_open"
