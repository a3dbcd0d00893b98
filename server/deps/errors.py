"""Errors of the deps feature, each knowing its gRPC status, reason and sandbox type.

ServiceErrors, so DependencyService handlers let them propagate and the
registration wrapper maps them; the host-call handler uses `sandbox_type` so
sandboxed code catches a precise exception (`RuntimeDepsDisabledError`,
`InvalidPackageSpecError` which is a ValueError).
"""

from __future__ import annotations

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError, reason_name


class DepsError(ServiceError):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = reason_name(reasons.ERROR_REASON_INTERNAL)
    sandbox_type: str = "RuntimeError"

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(self.code, self.reason, message, metadata or None)


class DepsSpecError(DepsError, ValueError):
    """A package spec that must not reach pip; the message says which rule it broke."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = reason_name(reasons.ERROR_REASON_INVALID_PACKAGE_SPEC)
    sandbox_type = "InvalidPackageSpecError"

    def __init__(self, message: str, field: str = "package") -> None:
        # Every API that takes one spec names it `package`; CreateSession re-raises
        # with its own field (session.config.deps).
        super().__init__(message, field=field)


class RuntimeDepsDisabledError(DepsError, PermissionError):
    """deps.add/remove while the session has allow_runtime_deps=false."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = reason_name(reasons.ERROR_REASON_RUNTIME_DEPS_DISABLED)
    sandbox_type = "RuntimeDepsDisabledError"


class DepsInstallError(DepsError, RuntimeError):
    """pip failed or no package source is configured; the message carries pip's output tail.

    FAILED_PRECONDITION: the spec was valid, but the configured source cannot
    satisfy it (missing package/version) or there is no source at all.
    Metadata `cause=install_failed` is kept for clients that read it.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = reason_name(reasons.ERROR_REASON_DEPS_INSTALL_FAILED)
    sandbox_type = "RuntimeError"

    def __init__(self, message: str) -> None:
        super().__init__(message, cause="install_failed")
