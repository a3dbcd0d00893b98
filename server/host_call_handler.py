"""The seam through which sandboxed code reaches control-plane features.

Sandboxed code calls `skills.*`, `artifacts.*`, `deps.*`; the agent forwards each call
as a HostCall event on the Execute stream and the relay hands it to a HostCallHandler.
The skills/artifacts engineers plug in their own handler; the default refuses politely
so sandboxed code gets a Python exception instead of a hang.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from codemode_protos.sandbox.v1 import agent_pb2

if TYPE_CHECKING:
    from server.session_model import Session


class HostCallHandler(Protocol):
    async def handle(self, session: Session, call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
        """Answers one call; the relay fills in call_id if it is left 0.

        Raising is allowed (the relay turns the exception into a HostCallError), but a
        handler should prefer returning `HostCallResult(error=...)` with a precise type.
        """


class NotImplementedHostCallHandler:
    """Answers every method with NotImplementedError until real handlers are plugged in."""

    async def handle(self, session: Session, call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
        return agent_pb2.HostCallResult(
            call_id=call.call_id,
            error=agent_pb2.HostCallError(
                type="NotImplementedError",
                message=f"host call {call.method!r} is not available on this server",
            ),
        )
