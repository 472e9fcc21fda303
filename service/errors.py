"""Domain errors. Core code raises these; ``service.api.errors`` maps them to JSON in one place.

EraserError (500)
├── BadRequest (400) ─┬─ InvalidInstances (422)
│                    ├─ InvalidTensor (400): an OIP tensor's datatype, data or binary framing
│                    ├─ InvalidRequestBody (422): a JSON field inside a form is invalid
│                    ├─ InvalidCalibrationSet (422): an upload that cannot train a patch
│                    ├─ InvalidAuditInput (422): an audit's data, pairs or attributes
│                    ├─ InvalidMonitoring (422), InvalidFeedback (422): bias monitoring
│                    └─ PayloadTooLarge (413)
├── Unauthorized (401), Forbidden (403)
├── NotFound (404) ─┬─ ModelNotFound
│                   ├─ PatchNotFound
│                   ├─ JobNotFound
│                   ├─ CalibrationSetNotFound
│                   ├─ AuditNotFound
│                   └─ RequestNotFound: feedback for an unknown/expired request id
├── Conflict (409) ─┬─ StackConflict
│                   ├─ PatchRejected: the validation gate refused this version
│                   ├─ FeedbackAlreadyRecorded
│                   └─ InvalidStoredRecord: a record read back from Redis fails its schema
├── MonitoringStoreUnavailable (503): the served-decision store did not answer
├── UploadCheckFailed (503): the upload validation process died
├── RegistryError (500) ─── IntegrityError (409: hash or signature mismatch)
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

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the details (an upload is validated in another process)."""
        return _rebuild, (type(self), self.message, self.details)


def _rebuild(cls: type[EraserError], message: str, details: dict[str, Any]) -> EraserError:
    return cls(message, **details)


class BadRequest(EraserError):
    status_code = 400
    code = "bad_request"


class InvalidInstances(BadRequest):
    status_code = 422
    code = "invalid_instances"


class InvalidTensor(BadRequest):
    """An Open Inference Protocol tensor whose datatype, data or binary framing is malformed."""

    code = "invalid_tensor"


class InvalidRequestBody(BadRequest):
    status_code = 422
    code = "invalid_request"


class InvalidCalibrationSet(BadRequest):
    status_code = 422
    code = "invalid_calibration_set"


class InvalidAuditInput(BadRequest):
    """A counterfactual audit that cannot run: an attribute that is not an input and has no
    pairs, a value outside the given ones, pairs of the wrong shape, an unreadable data file."""

    status_code = 422
    code = "invalid_audit_input"


class PayloadTooLarge(BadRequest):
    status_code = 413
    code = "payload_too_large"


class InvalidMonitoring(BadRequest):
    """A ``monitor`` field naming an undeclared attribute or group, or not one per instance."""

    status_code = 422
    code = "invalid_monitor"


class InvalidFeedback(BadRequest):
    """Feedback for an instance index or a label that the stored request does not have."""

    status_code = 422
    code = "invalid_feedback"


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


class AuditNotFound(NotFound):
    code = "audit_not_found"


class RequestNotFound(NotFound):
    """Feedback for a request id that was never issued, has expired or was evicted."""

    code = "request_not_found"


class Conflict(EraserError):
    status_code = 409
    code = "conflict"


class StackConflict(Conflict):
    code = "stack_revision_conflict"


class PatchRejected(Conflict):
    code = "patch_rejected"


class FeedbackAlreadyRecorded(Conflict):
    code = "feedback_already_recorded"


class InvalidStoredRecord(Conflict):
    """A record read back from Redis (e.g. a stack written by hand) that fails its schema: the
    operator can replace it, so a 409 that says what is wrong rather than a 500."""

    code = "invalid_stored_record"


class MonitoringStoreUnavailable(EraserError):
    """The served-decision store (Redis) did not answer in time."""

    status_code = 503
    code = "monitoring_store_unavailable"


class UploadCheckFailed(EraserError):
    """The process that validates uploads died; the upload may be sent again."""

    status_code = 503
    code = "upload_check_failed"


class RegistryError(EraserError):
    code = "registry_error"


class IntegrityError(RegistryError):
    """A stored artifact or record fails its hash or signature: someone edited Redis, or it lost
    data. The operator can re-register, so a 409 that says which record, not a 500."""

    status_code = 409
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
