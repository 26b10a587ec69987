"""Satchel's whole exception tree, with stable string codes.

Every error a user can cause or meet is one of these. The server maps them to the one JSON
error shape ``{"error": {"code", "message", "details"}}``; the SDK rebuilds the same class from
the code (see :func:`error_from_payload`), so the CLI can print ``TeamStorageImmutable: ...``.

    SatchelError                      internal            500
    ├── InvalidInput                  invalid_input       400
    │   ├── ValidationFailed          validation_failed   422
    │   ├── InvalidKey                invalid_key         400
    │   ├── InvalidStorageAddress     invalid_storage_address 400
    │   ├── ChecksumMismatch          checksum_mismatch   400
    │   ├── BucketCheckFailed         bucket_check_failed 400
    │   ├── NotAvailable              not_available_in_deployment 400
    │   └── RangeNotSatisfiable       range_not_satisfiable 416
    ├── NotAuthenticated              not_authenticated   401
    ├── PermissionDenied              permission_denied   403
    │   ├── CsrfFailed                csrf_failed         403
    │   └── SignatureInvalid          signature_invalid   403
    │       └── UrlExpired            url_expired         403
    ├── NotFound                      not_found           404
    ├── MethodNotAllowed              method_not_allowed  405
    ├── Conflict                      conflict            409
    │   ├── AlreadyExists             already_exists      409
    │   ├── TeamStorageImmutable      team_storage_immutable 409
    │   ├── StorageAlreadyClaimed     storage_already_claimed 409
    │   ├── InstanceStorageInUse      instance_storage_in_use 409
    │   ├── ArtifactIncomplete        artifact_incomplete 409
    │   ├── ArtifactExpired           artifact_expired    409
    │   └── RecordGap                 record_gap          409
    ├── PayloadTooLarge               payload_too_large   413
    ├── StorageError                  storage_error       502
    │   └── StorageUnavailable        storage_unavailable 503
    ├── DatabaseUnavailable           database_unavailable 503
    ├── ServerUnreachable             server_unreachable  (client side only)
    └── ConfigError                   config_error        (start-up only; one line per problem)

Messages say what was wrong, what was expected and how to fix it. They never contain secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SatchelError(Exception):
    """Base of every Satchel error."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __str__(self) -> str:
        return self.message


class InvalidInput(SatchelError):
    code = "invalid_input"
    http_status = 400


class ValidationFailed(InvalidInput):
    """A request body, query or path parameter did not match the schema."""

    code = "validation_failed"
    http_status = 422


class InvalidKey(InvalidInput):
    """An object key is unsafe (``..``, absolute, ``//``, NUL or control characters)."""

    code = "invalid_key"


class InvalidStorageAddress(InvalidInput):
    code = "invalid_storage_address"


class ChecksumMismatch(InvalidInput):
    code = "checksum_mismatch"


class BucketCheckFailed(InvalidInput):
    """The bucket doctor found errors; ``details["findings"]`` lists them with their fixes."""

    code = "bucket_check_failed"


class NotAvailable(InvalidInput):
    """The request is valid but not offered in this deployment mode."""

    code = "not_available_in_deployment"


class RangeNotSatisfiable(InvalidInput):
    code = "range_not_satisfiable"
    http_status = 416


class NotAuthenticated(SatchelError):
    code = "not_authenticated"
    http_status = 401


class PermissionDenied(SatchelError):
    code = "permission_denied"
    http_status = 403


class CsrfFailed(PermissionDenied):
    code = "csrf_failed"


class SignatureInvalid(PermissionDenied):
    """A presigned URL was tampered with, or used for another key or method."""

    code = "signature_invalid"


class UrlExpired(SignatureInvalid):
    code = "url_expired"


class NotFound(SatchelError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(SatchelError):
    code = "method_not_allowed"
    http_status = 405


class Conflict(SatchelError):
    code = "conflict"
    http_status = 409


class AlreadyExists(Conflict):
    code = "already_exists"


class TeamStorageImmutable(Conflict):
    code = "team_storage_immutable"


class StorageAlreadyClaimed(Conflict):
    code = "storage_already_claimed"


class InstanceStorageInUse(Conflict):
    code = "instance_storage_in_use"


class ArtifactIncomplete(Conflict):
    """Commit refused: objects of the version are missing from the bucket or have the wrong
    size/checksum; ``details["problems"]`` lists them. Upload them and commit again."""

    code = "artifact_incomplete"


class ArtifactExpired(Conflict):
    """Restore refused: the version's TTL ran out (``details["expires_at"]``), so the next
    garbage collection would delete it again. Give it a new TTL first, then restore."""

    code = "artifact_expired"


class RunPurged(Conflict):
    """Restore refused: the run was deleted longer than the retention window ago and the
    garbage collector has purged it (its history, console, files and exports are gone)."""

    code = "run_purged"


class RecordGap(Conflict):
    """A run's records arrived out of order: the server has applied ``details["hwm"]`` records
    and the batch starts later. The SDK rewinds its spool to ``hwm`` and sends again."""

    code = "record_gap"


class PayloadTooLarge(SatchelError):
    code = "payload_too_large"
    http_status = 413


class StorageError(SatchelError):
    """The object store failed or refused in a way the user cannot fix by changing input."""

    code = "storage_error"
    http_status = 502


class StorageUnavailable(StorageError):
    code = "storage_unavailable"
    http_status = 503


class DatabaseUnavailable(SatchelError):
    code = "database_unavailable"
    http_status = 503


class ServerUnreachable(SatchelError):
    """Client side: the Satchel server could not be reached."""

    code = "server_unreachable"
    http_status = 503


class ConfigError(SatchelError):
    """Start-up configuration is invalid; ``problems`` holds one line per problem."""

    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems), details={"problems": problems})


def _all_subclasses(cls: type[SatchelError]) -> list[type[SatchelError]]:
    out: list[type[SatchelError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_classes() -> dict[str, type[SatchelError]]:
    """Map every stable code to its class (the SDK uses this to rebuild errors)."""
    classes: list[type[SatchelError]] = [SatchelError, *_all_subclasses(SatchelError)]
    return {c.code: c for c in classes if c is not ConfigError}


def error_from_payload(status: int, payload: Any) -> SatchelError:
    """Rebuild the exception a server response describes; unknown shapes become SatchelError."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return SatchelError(f"server answered HTTP {status} without a Satchel error body")
    cls = error_classes().get(str(err.get("code")), SatchelError)
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    return cls(str(err.get("message", "")), details=details)
