"""How big one host call, and one message between the control plane and an agent, may be.

Artifacts up to the documented 64 MiB travel from sandboxed code to the control plane
as one host call (artifacts.save's payload) and back as one answer (artifacts.load's),
so both gRPC ends of the agent channel must carry a message of that size plus its JSON
arguments and framing: the agent's server (sandbox_agent/cli.py) and the control
plane's channel (server/providers/agent_channel.py) both use MAX_MESSAGE_BYTES. A
call bigger than a message can carry is refused in the sandbox before it is sent
(sandbox_agent/interpreter/host.py), as a clear exception instead of a broken stream.

Imported by the interpreter child, so no grpc here.
"""

from __future__ import annotations

MIB = 1024 * 1024
#: The server's artifact size limit (server/artifacts/library.py DEFAULT_MAX_ARTIFACT_BYTES;
#: a test keeps them equal), checked in the sandbox too so an oversized save fails fast.
MAX_ARTIFACT_BYTES = 64 * MIB
#: JSON arguments (name, description, metadata of at most 64 KiB...) and result fields.
HOST_CALL_OVERHEAD_BYTES = 1 * MIB
#: Payload plus JSON of one host call or of its answer.
MAX_HOST_CALL_BYTES = MAX_ARTIFACT_BYTES + HOST_CALL_OVERHEAD_BYTES
#: gRPC max send/receive message size on the agent channel, both ends.
MAX_MESSAGE_BYTES = MAX_HOST_CALL_BYTES + MIB

__all__ = ["HOST_CALL_OVERHEAD_BYTES", "MAX_ARTIFACT_BYTES", "MAX_HOST_CALL_BYTES", "MAX_MESSAGE_BYTES", "MIB"]
