"""A huge ExecuteStart.timeout must not wedge the agent (issue 9, defence in depth).

The control plane refuses timeouts past --max-timeout, but the agent must not trust
that: `Duration.ToTimedelta()` raised OverflowError for 1e14 s after the agent had
taken its one-execution gate, so every later Execute was SESSION_BUSY.
"""

from __future__ import annotations

from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import execute


async def test_a_timeout_of_1e14_seconds_runs_and_the_next_execute_works(stub):
    first = await execute(stub, "print('huge timeout')", timeout=1e14)
    finished = [r.finished for r in first.responses if r.WhichOneof("event") == "finished"]
    assert finished and finished[0].status == execute_pb2.EXECUTION_STATUS_OK

    second = await execute(stub, "print('next')")
    finished = [r.finished for r in second.responses if r.WhichOneof("event") == "finished"]
    assert finished and finished[0].status == execute_pb2.EXECUTION_STATUS_OK
