"""Exceptions raised in sandboxed code when a host call fails.

The control plane names the type in `HostCallError.type`; `error_class` maps that
name to one of these (or to a harmless builtin) so user code can catch a precise
type such as `SkillNotFoundError` instead of parsing messages.
"""

from __future__ import annotations

import builtins


class HostCallError(Exception):
    """A host call failed; the fallback for types the sandbox does not know."""


class HostCallUnavailableError(HostCallError):
    """Host calls work only while an execution is running (not from leftover threads)."""


class SkillNotFoundError(HostCallError, LookupError):
    """No skill has that name in the session's tenant."""


class SkillInvalidError(HostCallError, ValueError):
    """The skill's name or source failed validation."""


class SkillAlreadyExistsError(HostCallError):
    """A skill with that name already exists."""


class ArtifactNotFoundError(HostCallError, LookupError):
    """No artifact has that name in the session's tenant."""


class ArtifactInvalidError(HostCallError, ValueError):
    """The artifact name or data was rejected."""


class ArtifactTooLargeError(HostCallError):
    """The artifact is larger than the server's limit."""


class QuotaExceededError(HostCallError):
    """The session's tenant used up a quota (skills, artifact bytes); free room first."""


class RuntimeDepsDisabledError(HostCallError):
    """Runtime dependency changes are disabled for this session."""


class InvalidPackageSpecError(HostCallError, ValueError):
    """A package specification was rejected."""


class StorageUnavailableError(HostCallError):
    """The storage backend is unavailable right now."""


_BUILTIN_ALLOWED = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "LookupError",
        "RuntimeError",
        "TimeoutError",
        "PermissionError",
        "FileNotFoundError",
        "NotImplementedError",
        "ConnectionError",
    }
)


def error_class(type_name: str) -> type[Exception]:
    """The exception class to raise for a `HostCallError.type` sent by the host."""
    local = globals().get(type_name)
    if isinstance(local, type) and issubclass(local, HostCallError):
        return local
    if type_name in _BUILTIN_ALLOWED:
        return getattr(builtins, type_name)
    return HostCallError
