"""Domain errors of the skill and artifact stores.

Each error carries the gRPC status code and ErrorInfo reason it maps to, so
the gRPC services and the host-call handler classify failures from one table
instead of re-deciding per call site.
"""

from __future__ import annotations

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError, log_internal, quota_violation, reason_name


class StoreError(ServiceError):
    """Base of every error the stores raise on purpose.

    A ServiceError, so gRPC handlers can let it propagate: the registration
    wrapper turns it into its status code with the matching ErrorInfo.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = reason_name(reasons.ERROR_REASON_INTERNAL)
    # The Python exception type sandboxed code sees for this error.
    sandbox_type: str = "RuntimeError"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(self.code, self.reason, message, {"field": field} if field else None)
        self.field = field


class InvalidArgumentError(StoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = reason_name(reasons.ERROR_REASON_INVALID_ARGUMENT)
    sandbox_type = "ValueError"


class SkillInvalidError(StoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = reason_name(reasons.ERROR_REASON_SKILL_INVALID)
    sandbox_type = "SkillInvalidError"


class SkillNotFoundError(StoreError):
    code = grpc.StatusCode.NOT_FOUND
    reason = reason_name(reasons.ERROR_REASON_SKILL_NOT_FOUND)
    sandbox_type = "SkillNotFoundError"

    def __init__(self, name: str) -> None:
        super().__init__(f"Skill not found: {name}", field="name")
        self.name = name


class SkillAlreadyExistsError(StoreError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = reason_name(reasons.ERROR_REASON_SKILL_ALREADY_EXISTS)
    sandbox_type = "SkillAlreadyExistsError"

    def __init__(self, name: str) -> None:
        super().__init__(f"Skill already exists: {name}", field="name")
        self.name = name


class EtagMismatchError(StoreError):
    code = grpc.StatusCode.ABORTED
    reason = reason_name(reasons.ERROR_REASON_ETAG_MISMATCH)
    sandbox_type = "RuntimeError"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Skill {name} was changed since the given etag was read; re-read it and retry",
            field="etag",
        )


class ArtifactNotFoundError(StoreError):
    code = grpc.StatusCode.NOT_FOUND
    reason = reason_name(reasons.ERROR_REASON_ARTIFACT_NOT_FOUND)
    sandbox_type = "ArtifactNotFoundError"

    def __init__(self, name: str) -> None:
        super().__init__(f"Artifact not found: {name}", field="name")
        self.name = name


class ArtifactInvalidError(StoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = reason_name(reasons.ERROR_REASON_ARTIFACT_INVALID)
    sandbox_type = "ArtifactInvalidError"


class ArtifactTooLargeError(StoreError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = reason_name(reasons.ERROR_REASON_ARTIFACT_TOO_LARGE)
    sandbox_type = "ArtifactTooLargeError"


class StorageUnavailableError(StoreError):
    """The backend cannot be reached; the caller may retry the same call later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = reason_name(reasons.ERROR_REASON_STORAGE_UNAVAILABLE)
    sandbox_type = "StorageUnavailableError"


class QuotaExceededError(StoreError):
    """A tenant used up one of its quotas (server/quotas.py).

    A StoreError so host calls map it like every store error (sandboxed code sees
    QuotaExceededError), and it carries google.rpc.QuotaFailure + RetryInfo for gRPC
    callers. `limit` is the quota, `retry_seconds` when trying again can succeed by
    itself (a window resets, a session expires); None when only deleting something frees
    room (skills, artifact bytes), so no RetryInfo is sent.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = reason_name(reasons.ERROR_REASON_QUOTA_EXCEEDED)
    sandbox_type = "QuotaExceededError"

    def __init__(self, tenant: str, quota: str, limit: int, message: str, retry_seconds: float | None) -> None:
        super().__init__(message)
        self.metadata.update(tenant=tenant, quota=quota, limit=str(limit))
        self.retry_seconds = retry_seconds
        self.with_details(quota_violation(f"tenant:{tenant}", quota, f"{quota} quota of tenant {tenant!r} is {limit}"))


def storage_unavailable(backend: str, exc: BaseException) -> StorageUnavailableError:
    """The backend failed: the caller learns that and an errorId, the log the cause.

    Why not the exception's text: an OSError names server paths (the data dir), a Redis
    error the server's network addresses; neither helps a caller, who can only retry.
    """
    error_id = log_internal(exc, f"{backend} failed", with_traceback=False)
    cause = ""
    if isinstance(exc, OSError) and exc.strerror:
        cause = f" ({exc.strerror.lower()})"  # e.g. "no space left on device": no path
    error = StorageUnavailableError(f"the {backend} is unavailable{cause}; retry later (errorId {error_id})")
    error.metadata["errorId"] = error_id
    return error
