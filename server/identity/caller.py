"""The authenticated caller of the current RPC, and the tenant checks handlers make with it.

The auth interceptor binds a `Caller` in a contextvar before the handler runs; grpc.aio
runs the interceptor and the handler in the RPC's own task, so every call sees its own
caller and nothing leaks between calls. Handlers never read `request.tenant` directly:
they ask `tenant_for(request.tenant)`, which applies the one rule of the API:

* the tenant is implied by the principal;
* the request's `tenant` field is an operator's override: empty means the server's
  `--tenant` for an operator and the principal's own tenant for everyone else;
* anyone else naming another tenant gets PERMISSION_DENIED;
* another tenant's session answers NOT_FOUND, exactly as a missing one does.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from typing import TYPE_CHECKING

from server.errors import internal
from server.identity.policy import permission_denied
from server.identity.principals import Principal

if TYPE_CHECKING:
    from server.session_model import Session

_log = logging.getLogger(__name__)
ALL_TENANTS = "*"  # what the audit line shows for an operator's ListSessions over every tenant


@dataclasses.dataclass(eq=False)
class Caller:
    principal: Principal
    default_tenant: str  # the server's --tenant: an operator's tenant when the request names none
    tenant: str = ""  # the tenant this call acted on, once a handler resolved it (for the audit line)
    forwarded_by: str = ""  # the instance that forwarded the call (server/cluster/internal.py), if any


_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("codemode_caller", default=None)


def bind(caller: Caller) -> contextvars.Token:
    return _CALLER.set(caller)


def unbind(token: contextvars.Token) -> None:
    _CALLER.reset(token)


def bound() -> Caller | None:
    """The caller bound to this RPC, if any: for the access log, which also sees calls
    refused before a caller existed. Handlers use `current()`, which refuses without one."""
    return _CALLER.get()


def current() -> Caller:
    """The caller of this RPC. Without one the server is miswired: refuse, never default."""
    caller = _CALLER.get()
    if caller is None:
        _log.error("a handler ran without an authenticated caller (is the auth interceptor installed?)")
        raise internal("no authenticated caller")
    return caller


def principal() -> Principal:
    return current().principal


def tenant_for(requested: str) -> str:
    """The tenant a request acts on (see the module docstring); records it for the audit."""
    from server.storage.records import validate_tenant

    caller = current()
    who = caller.principal
    if who.is_operator:
        tenant = validate_tenant(requested or caller.default_tenant)
    elif not requested or requested == who.tenant:
        tenant = who.tenant
    else:
        raise permission_denied(
            f"principal {who.id!r} belongs to tenant {who.tenant!r} and may not act on tenant {requested!r}"
        )
    caller.tenant = tenant
    return tenant


def session_list_tenant(requested: str) -> str:
    """ListSessions' tenant filter: "" (every tenant) only for an operator naming none."""
    caller = current()
    if caller.principal.is_operator and not requested:
        caller.tenant = ALL_TENANTS
        return ""
    return tenant_for(requested)


def visible_session(session: "Session") -> "Session":
    """The session if the caller may use it, else the same NOT_FOUND a missing one gives."""
    check_visible(session.id, session.tenant)
    return session


def check_visible(session_id: str, tenant: str) -> None:
    """visible_session for a session known only by its id and tenant (another instance's)."""
    from server.session_model import session_not_found

    caller = current()
    if caller.principal.is_operator or tenant == caller.principal.tenant:
        caller.tenant = tenant
        return
    raise session_not_found(session_id)
