"""Default bounds of the agent's replay log (sandbox_agent/replay.py), in a module with no
imports: the agent's bootstrap reads them before asyncio and grpc are loaded, and the
control plane keeps its request_id records for the same retention (server/executions.py)."""

from __future__ import annotations

#: Total bytes of events kept over all remembered executions (`--replay-buffer-bytes`).
DEFAULT_REPLAY_BUFFER_BYTES = 8 * 1024 * 1024
#: How long an ended execution stays attachable (`--replay-retention-seconds`).
DEFAULT_REPLAY_RETENTION_SECONDS = 600.0
#: How many ended executions stay attachable (`--replay-executions`).
DEFAULT_REPLAY_EXECUTIONS = 16

__all__ = ["DEFAULT_REPLAY_BUFFER_BYTES", "DEFAULT_REPLAY_EXECUTIONS", "DEFAULT_REPLAY_RETENTION_SECONDS"]
