"""Which role may call which method: one table, checked before any handler runs.

A method missing from the table is refused to everyone (a new RPC stays closed until
someone decides who may call it; tests/identity checks the table covers every RPC in
protos/codemode/v1). Tenant checks come later, in the handler, because only the
handler knows which tenant a request touches (server/identity/caller.py).
"""

from __future__ import annotations

import enum

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError
from server.identity.principals import Principal, Role

#: Unauthenticated: load balancers and orchestrators probe health without a secret.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class Action(enum.Enum):
    DISCOVER = "discover"  # server reflection: which services exist
    LIBRARY_READ = "library_read"  # get/list/search skills, get/list/download artifacts
    LIBRARY_WRITE = "library_write"
    SESSION_READ = "session_read"  # a session's state and its dependency list
    SESSION_WRITE = "session_write"  # create/reset/delete sessions, change their deps
    EXECUTE = "execute"


#: Calls that change something or run code: these get an audit line.
AUDITED = frozenset({Action.LIBRARY_WRITE, Action.SESSION_WRITE, Action.EXECUTE})

_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.READER: frozenset({Action.DISCOVER, Action.LIBRARY_READ}),
    Role.TENANT: frozenset(Action),
    Role.OPERATOR: frozenset(Action),
}

_S, _X, _K, _A, _D = (
    "/codemode.v1.SessionService/",
    "/codemode.v1.ExecuteService/",
    "/codemode.v1.SkillStoreService/",
    "/codemode.v1.ArtifactService/",
    "/codemode.v1.DependencyService/",
)
METHODS: dict[str, Action] = {
    _S + "CreateSession": Action.SESSION_WRITE,
    _S + "GetSession": Action.SESSION_READ,
    _S + "WaitSession": Action.SESSION_READ,  # GetSession that waits out STARTING/INSTALLING
    _S + "ListSessions": Action.SESSION_READ,
    _S + "ResetSession": Action.SESSION_WRITE,
    _S + "DeleteSession": Action.SESSION_WRITE,
    _X + "Execute": Action.EXECUTE,
    _X + "AttachExecution": Action.SESSION_READ,  # reads an execution's events; runs nothing
    _X + "CancelExecution": Action.EXECUTE,
    _K + "CreateSkill": Action.LIBRARY_WRITE,
    _K + "GetSkill": Action.LIBRARY_READ,
    _K + "ListSkills": Action.LIBRARY_READ,
    _K + "SearchSkills": Action.LIBRARY_READ,
    _K + "UpdateSkill": Action.LIBRARY_WRITE,
    _K + "DeleteSkill": Action.LIBRARY_WRITE,
    _A + "UploadArtifact": Action.LIBRARY_WRITE,
    _A + "DownloadArtifact": Action.LIBRARY_READ,
    _A + "GetArtifact": Action.LIBRARY_READ,
    _A + "ListArtifacts": Action.LIBRARY_READ,
    _A + "DeleteArtifact": Action.LIBRARY_WRITE,
    _D + "AddDependency": Action.SESSION_WRITE,
    _D + "RemoveDependency": Action.SESSION_WRITE,
    _D + "ListDependencies": Action.SESSION_READ,
    _D + "SyncDependencies": Action.SESSION_WRITE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Action.DISCOVER,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Action.DISCOVER,
}


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, reasons.ERROR_REASON_PERMISSION_DENIED, message)


def action_for(method: str) -> Action | None:
    return METHODS.get(method)


def authorize(principal: Principal, method: str, action: Action | None) -> None:
    """Raises PERMISSION_DENIED unless the principal's role allows the method."""
    if action is None:
        raise permission_denied(f"{method} is not covered by the server's authorization policy")
    if action not in _ALLOWED[principal.role]:
        name = method.rsplit("/", 1)[-1]
        raise permission_denied(f"principal {principal.id!r} has role {principal.role}, which may not call {name}")
