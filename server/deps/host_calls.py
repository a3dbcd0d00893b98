"""Serves `deps.add/remove/list/sync` calls of sandboxed code for the session's own sandbox.

The reply to add/sync carries `import_paths` (the directories, as the
interpreter sees them, where packages land) so the namespace can make sure
they are on `sys.path` before it invalidates the import caches.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from codemode_protos.sandbox.v1 import agent_pb2
from server.deps import installs
from server.deps.errors import DepsError
from server.deps.session_deps import SessionDeps

if TYPE_CHECKING:
    from server.session_model import Session


def session_deps(session: Session) -> SessionDeps | None:
    """The deps state of the session's current sandbox (None: no deps support)."""
    return session.sandbox.deps if session.sandbox is not None else None


def _import_paths(session: Session) -> list[str]:
    return list(session.sandbox.deps_import_paths) if session.sandbox is not None else []


class _UnknownMethod(Exception):
    pass


class DepsHostCallHandler:
    async def handle(self, session: Session, call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
        deps = session_deps(session)
        try:
            params = json.loads(call.params_json or "{}")
            if not isinstance(params, dict):
                raise ValueError("params must be a JSON object")
            if deps is None:
                return _error(call, "NotImplementedError", "this sandbox does not support deps")
            result = await self._dispatch(session, deps, call.method, params)
        except DepsError as exc:
            return _error(call, exc.sandbox_type, exc.public_message)
        except _UnknownMethod as exc:
            return _error(call, "NotImplementedError", f"host call {exc.args[0]!r} is not available on this server")
        except ValueError as exc:
            return _error(call, "ValueError", f"invalid host call parameters: {exc}")
        return agent_pb2.HostCallResult(call_id=call.call_id, result_json=json.dumps(result))

    async def _dispatch(self, session: Session, deps: SessionDeps, method: str, params: dict) -> Any:
        if method == "deps.list":
            return deps.list()
        if method == "deps.add":
            # Inside an Execute (the session is BUSY): the calling code waits for the
            # install, which is recorded as the session's last_install like the API's.
            package, already = deps.check_add(params.get("package"))
            if already:
                added = await deps.add(package)
            else:
                with installs.tracked(session, (package,)):
                    added = await deps.add(package)
            return {
                "package": added.package,
                "already_present": added.already_present,
                "dependencies": added.dependencies,
                "import_paths": _import_paths(session),
            }
        if method == "deps.remove":
            return await deps.remove(params.get("package"))
        if method == "deps.sync":
            missing = deps.missing()
            if missing:
                with installs.tracked(session, missing) as record:
                    synced = await deps.sync()
                    record.succeed(synced.installed)
            else:
                synced = await deps.sync()
            return {"installed": synced.installed, "dependencies": synced.dependencies, "import_paths": _import_paths(session)}
        raise _UnknownMethod(method)


def _error(call: agent_pb2.HostCall, type_: str, message: str) -> agent_pb2.HostCallResult:
    return agent_pb2.HostCallResult(call_id=call.call_id, error=agent_pb2.HostCallError(type=type_, message=message))
