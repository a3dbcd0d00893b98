"""Host calls ride the Execute stream and are answered while events keep flowing."""

from __future__ import annotations

import asyncio

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from tests.server.helpers import assert_stream_contract, connect, stdout


class _GatedHandler:
    """Answers only after the test saw output produced *before* the call."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.methods: list[str] = []

    async def handle(self, session, call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
        self.methods.append(call.method)
        await asyncio.wait_for(self.gate.wait(), timeout=30)
        return agent_pb2.HostCallResult(call_id=call.call_id, result_json='["numpy"]')


async def test_output_flows_while_a_host_call_is_pending(running_server) -> None:
    handler = _GatedHandler()
    server = await running_server(host_call_handler=handler)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        request = execute_pb2.ExecuteRequest(session=session.name, code="print('before', flush=True)\nprint(deps.list())")
        events = []
        async for event in client.execute.Execute(request, timeout=60):
            events.append(event)
            if event.HasField("output") and b"before" in event.output.data:
                handler.gate.set()
        assert_stream_contract(events)
        assert handler.methods == ["deps.list"]
        assert stdout(events) == b"before\n['numpy']\n"


async def test_default_handler_serves_artifacts_and_refuses_unknown_methods(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        code = (
            "from sandbox_agent.interpreter import host\n"
            "try:\n    host.call('nope.unknown', {})\nexcept NotImplementedError as exc:\n    print('refused')\n"
            "artifacts.save('relay-test', {'a': 1})\nprint(artifacts.load('relay-test'))"
        )
        events = await client.run(session.name, code)
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK, events
        assert stdout(events) == b"refused\n{'a': 1}\n"
