"""Generated from protos/codemode/v1/error_reason.proto by scripts/generate_python_client.py; do not edit."""

from __future__ import annotations

from typing import Final


class ErrorReason:
    """The reasons the server puts in its ``google.rpc.ErrorInfo``: ``CodemodeError.reason``.

    Plain strings (the enum value name without ``ERROR_REASON_``), so
    ``error.reason == ErrorReason.SESSION_BUSY`` reads well, comparing with
    ``"SESSION_BUSY"`` keeps working, and a reason added by a newer server is
    still an ordinary string.
    """

    INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"
    """A request field is malformed (see the BadRequest field violations)."""

    INVALID_SESSION_NAME: Final = "INVALID_SESSION_NAME"
    """The session name is not of the form "sessions/{id}"."""

    SESSION_NOT_FOUND: Final = "SESSION_NOT_FOUND"
    """No live session has that name (never existed, deleted or expired)."""

    SESSION_BUSY: Final = "SESSION_BUSY"
    """Another Execute is running on the session."""

    SESSION_NOT_READY: Final = "SESSION_NOT_READY"
    """The session's sandbox failed or is closed; ResetSession or a new session is needed."""

    SESSION_LIMIT_REACHED: Final = "SESSION_LIMIT_REACHED"
    """The server's cap on live sessions is reached."""

    CODE_TOO_LARGE: Final = "CODE_TOO_LARGE"
    """The code is larger than the server's limit."""

    EMPTY_CODE: Final = "EMPTY_CODE"
    """Unused: empty code runs as a no-op (kept so the number is not reused)."""

    SANDBOX_START_FAILED: Final = "SANDBOX_START_FAILED"
    """The sandbox could not be started."""

    SANDBOX_UNAVAILABLE: Final = "SANDBOX_UNAVAILABLE"
    """The sandbox agent cannot be reached right now."""

    UNAUTHENTICATED: Final = "UNAUTHENTICATED"
    """Missing or invalid credentials."""

    PERMISSION_DENIED: Final = "PERMISSION_DENIED"
    """The caller may not act on that resource (e.g. another tenant's)."""

    DUPLICATE_REQUEST: Final = "DUPLICATE_REQUEST"
    """A request with this request_id was already handled."""

    SERVER_SHUTTING_DOWN: Final = "SERVER_SHUTTING_DOWN"
    """The server is shutting down and accepts no new work."""

    SESSION_ALREADY_EXISTS: Final = "SESSION_ALREADY_EXISTS"
    """A session with the requested session_id already exists."""

    LIMIT_NOT_ENFORCEABLE: Final = "LIMIT_NOT_ENFORCEABLE"
    """
    A requested setting (metadata "field") cannot be enforced by the chosen sandbox kind on
    this server (FAILED_PRECONDITION).
    """

    QUOTA_EXCEEDED: Final = "QUOTA_EXCEEDED"
    """A per-tenant quota is used up (QuotaFailure says which, RetryInfo when to try again)."""

    SERVER_OVERLOADED: Final = "SERVER_OVERLOADED"
    """The server has as many calls in flight as it accepts; retry after the RetryInfo delay."""

    EXECUTION_NOT_FOUND: Final = "EXECUTION_NOT_FOUND"
    """No execution has that name, or its record is past retention."""

    SKILL_NOT_FOUND: Final = "SKILL_NOT_FOUND"
    """No skill has that name in the tenant."""

    SKILL_ALREADY_EXISTS: Final = "SKILL_ALREADY_EXISTS"
    """The skill already exists."""

    SKILL_INVALID: Final = "SKILL_INVALID"
    """The skill's name or source failed validation."""

    ETAG_MISMATCH: Final = "ETAG_MISMATCH"
    """The etag does not match the stored version."""

    ARTIFACT_NOT_FOUND: Final = "ARTIFACT_NOT_FOUND"
    """No artifact has that name in the tenant."""

    ARTIFACT_TOO_LARGE: Final = "ARTIFACT_TOO_LARGE"
    """The artifact is larger than the server's limit."""

    ARTIFACT_INVALID: Final = "ARTIFACT_INVALID"
    """The artifact name is invalid (path traversal, reserved name, ...)."""

    STORAGE_UNAVAILABLE: Final = "STORAGE_UNAVAILABLE"
    """The storage backend (Redis, files) is unavailable."""

    EVENTS_EXPIRED: Final = "EVENTS_EXPIRED"
    """
    The requested events are no longer kept (OUT_OF_RANGE); metadata
    "firstAvailableSequence" is the first that is.
    """

    SESSION_ELSEWHERE: Final = "SESSION_ELSEWHERE"
    """
    The session moved to another server instance while this call ran or was routed (a
    drained instance handed it over, or another adopted it): UNAVAILABLE; retry, or
    AttachExecution after the last sequence received.
    """

    RUNTIME_DEPS_DISABLED: Final = "RUNTIME_DEPS_DISABLED"
    """Runtime dependency changes are disabled for the session."""

    INVALID_PACKAGE_SPEC: Final = "INVALID_PACKAGE_SPEC"
    """A package specification was rejected."""

    DEPS_INSTALL_FAILED: Final = "DEPS_INSTALL_FAILED"
    """
    A valid package could not be installed from the configured index or wheelhouse (missing
    package or version, no package source configured).
    """

    INTERNAL: Final = "INTERNAL"
    """An unexpected server error."""

    CALL_CANCELLED: Final = "CALL_CANCELLED"
    """The caller cancelled the call (status CANCELLED)."""

    DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"
    """The call's deadline passed (status DEADLINE_EXCEEDED)."""
