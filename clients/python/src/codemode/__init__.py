"""Python client for codemode: run AI-agent Python code in isolated sandboxes.

``codemode.Client`` (sync) and ``codemode.AsyncClient`` (asyncio) expose the
same API; results, events and errors are shared types.
"""

from codemode._channel import TLSConfig
from codemode.aio import AsyncClient, AsyncExecution, AsyncSession
from codemode.errors import (
    AbortedError,
    AlreadyExistsError,
    CodemodeError,
    DeadlineExceededError,
    ExecutionCancelledError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
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
    Started,
)
from codemode.sync import Client, Execution, Session

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncExecution",
    "AsyncSession",
    "Client",
    "CodemodeError",
    "DeadlineExceededError",
    "DownloadedArtifact",
    "Error",
    "Execution",
    "ExecutionCancelledError",
    "ExecutionErrorInfo",
    "ExecutionEvent",
    "ExecutionResult",
    "ExecutionStatus",
    "FailedPreconditionError",
    "Finished",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Result",
    "Session",
    "Started",
    "TLSConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "__version__",
]
