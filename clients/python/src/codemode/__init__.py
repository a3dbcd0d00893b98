"""Python client for codemode: run AI-agent Python code in isolated sandboxes.

``codemode.Client`` (sync) and ``codemode.AsyncClient`` (asyncio) expose the
same API; results, events and errors are shared types.

The public names are loaded lazily (PEP 562): the server and the sandbox agent
import the generated ``codemode.v1`` / ``codemode.sandbox.v1`` stubs from this
same package, and a sandbox agent's start-up should not pay for the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codemode._channel import TLSConfig
    from codemode.aio import (
        AsyncClient,
        AsyncDependencies,
        AsyncExecution,
        AsyncSession,
    )
    from codemode.dependencies import (
        AddedDependency,
        RemovedDependency,
        SyncedDependencies,
    )
    from codemode.errors import (
        AbortedError,
        AlreadyExistsError,
        CodemodeError,
        DeadlineExceededError,
        DependencyInstallError,
        ErrorReason,
        ExecutionCancelledError,
        FailedPreconditionError,
        FieldViolation,
        InternalError,
        InvalidArgumentError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        SessionFailedError,
        UnauthenticatedError,
        UnavailableError,
        UnimplementedError,
    )
    from codemode.results import (
        DownloadedArtifact,
        Error,
        ExecutionErrorInfo,
        ExecutionEvent,
        ExecutionResult,
        ExecutionStatus,
        Finished,
        Output,
        Result,
        SkillSearchPage,
        Started,
    )
    from codemode.sync import Client, Dependencies, Execution, Session

__version__ = "0.1.0"

_MODULE_OF = {
    "TLSConfig": "codemode._channel",
    **dict.fromkeys(["AsyncClient", "AsyncDependencies", "AsyncExecution", "AsyncSession"], "codemode.aio"),
    **dict.fromkeys(["Client", "Dependencies", "Execution", "Session"], "codemode.sync"),
    **dict.fromkeys(
        ["AddedDependency", "RemovedDependency", "SyncedDependencies"], "codemode.dependencies"
    ),
    **dict.fromkeys(
        [
            "AbortedError", "AlreadyExistsError", "CodemodeError", "DeadlineExceededError",
            "DependencyInstallError", "ErrorReason", "ExecutionCancelledError", "FailedPreconditionError", "FieldViolation", "InternalError",
            "InvalidArgumentError", "NotFoundError", "PermissionDeniedError",
            "ResourceExhaustedError", "SessionFailedError", "UnauthenticatedError", "UnavailableError",
            "UnimplementedError",
        ],
        "codemode.errors",
    ),
    **dict.fromkeys(
        [
            "DownloadedArtifact", "Error", "ExecutionErrorInfo", "ExecutionEvent",
            "ExecutionResult", "ExecutionStatus", "Finished", "Output", "Result", "SkillSearchPage", "Started",
        ],
        "codemode.results",
    ),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'codemode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

__all__ = [
    "AbortedError",
    "AddedDependency",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncDependencies",
    "AsyncExecution",
    "AsyncSession",
    "Client",
    "CodemodeError",
    "DeadlineExceededError",
    "Dependencies",
    "DependencyInstallError",
    "DownloadedArtifact",
    "Error",
    "ErrorReason",
    "Execution",
    "ExecutionCancelledError",
    "ExecutionErrorInfo",
    "ExecutionEvent",
    "ExecutionResult",
    "ExecutionStatus",
    "FailedPreconditionError",
    "FieldViolation",
    "Finished",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "RemovedDependency",
    "ResourceExhaustedError",
    "Result",
    "Session",
    "SessionFailedError",
    "SkillSearchPage",
    "Started",
    "SyncedDependencies",
    "TLSConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "__version__",
]
