"""A client that reads slowly must not make the server buffer the execution's output.

The server runs in this process, so its memory is this process's VmRSS. The code
prints 200 MiB with an unlimited output budget while the client sleeps between
events; without backpressure the relay would hold most of it (the agent produces
far faster than this client reads).
"""

from __future__ import annotations

import asyncio

from codemode_protos.v1 import execute_pb2, session_pb2
from tests.server.helpers import connect

MIB = 1024 * 1024
PRINTED_MIB = 200
# Generous: a bounded chain holds a few MiB per hop; an unbounded relay queue would
# hold a large fraction of the 200 MiB.
MAX_GROWTH_MIB = 48

_PRINT_200_MIB = f"""
import sys
block = 'x' * {MIB}
for _ in range({PRINTED_MIB}):
    sys.stdout.write(block)
sys.stdout.flush()
"""


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_slow_client_keeps_server_memory_bounded(running_server) -> None:
    # The budget must exceed what is printed, so the server's own maximum is raised.
    server = await running_server(max_output_budget=8 * PRINTED_MIB * MIB)
    client = connect(server.address)
    try:
        config = session_pb2.SessionConfig(output_budget_bytes=4 * PRINTED_MIB * MIB)
        session = await client.create(session=session_pb2.Session(config=config))
        await client.run(session.name, "1+1")  # interpreter warm, allocator settled
        baseline = _rss_mib()
        peak = baseline
        received = 0
        sequences: list[int] = []
        kinds: list[str] = []
        last = execute_pb2.ExecuteResponse()
        request = execute_pb2.ExecuteRequest(session=session.name, code=_PRINT_200_MIB)
        # Keeps no event (a cleared field's bytes stay in the message's arena).
        async for event in client.execute.Execute(request, timeout=300):
            sequences.append(event.sequence)
            kinds.append(event.WhichOneof("event"))
            if kinds[-1] == "output":
                received += len(event.output.data)
                if len(kinds) % 8 == 0:
                    await asyncio.sleep(0.005)  # slower than the agent produces
                    peak = max(peak, _rss_mib())
            last = event
        assert sequences == list(range(1, len(sequences) + 1))
        assert kinds[0] == "started" and kinds[-1] == "finished", (kinds[:3], kinds[-3:])
        assert last.finished.status == execute_pb2.EXECUTION_STATUS_OK, last
        assert received == PRINTED_MIB * MIB
        assert peak - baseline < MAX_GROWTH_MIB, f"RSS grew {peak - baseline:.0f} MiB (from {baseline:.0f} MiB)"
    finally:
        await client.channel.close()
