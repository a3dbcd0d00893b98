"""What sandboxed code can hand the control plane, through the real server and a real sandbox.

* Lone surrogates (a `str` Python allows and UTF-8 does not) in a result's repr, an
  exception's message (its own or its `__str__`'s), or a host call's method used to end the whole call
  UNAVAILABLE: a protobuf string must be valid UTF-8, so the agent could not serialize the
  event. They arrive as backslash escapes and the execution finishes normally.
* Artifacts up to the documented 64 MiB work from sandboxed code (they failed UNAVAILABLE
  past 16 MiB, the agent channel's message size); past it, the sandbox raises
  ArtifactTooLargeError before sending anything, and the execution goes on.
"""

from __future__ import annotations

import hashlib

import grpc
import pytest

from codemode_protos.v1 import artifact_pb2, artifact_pb2_grpc, execute_pb2
from sandbox_agent import limits
from server.artifacts.library import DEFAULT_MAX_ARTIFACT_BYTES
from tests.server.helpers import assert_stream_contract, connect, stdout

MIB = 1024 * 1024


def _of(events, kind: str):
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


def _finished(events) -> execute_pb2.ExecutionFinished:
    assert_stream_contract(events)
    return events[-1].finished


@pytest.fixture
async def client(running_server):
    server = await running_server()
    api = connect(server.address)
    session = (await api.create()).name
    yield api, session, server
    await api.channel.close()


async def test_lone_surrogates_in_results_and_errors_arrive_escaped(client):
    api, session, _ = client
    events = await api.run(session, "class S:\n    def __repr__(self):\n        return 'odd \\udc80 repr'\nS()")
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_OK
    [result] = _of(events, "result")
    assert result.repr == "odd \\udc80 repr"

    events = await api.run(session, "raise ValueError('bad \\ud800 value')")
    finished = _finished(events)
    assert finished.status == execute_pb2.EXECUTION_STATUS_ERROR
    [error] = _of(events, "error")
    assert error.type == "ValueError" and error.message == "bad \\ud800 value"
    assert "bad \\ud800 value" in error.traceback and "\\ud800" in finished.message

    code = "class Odd(Exception):\n    def __str__(self):\n        return 'z \\udcff'\nraise Odd()"
    events = await api.run(session, code)
    [error] = _of(events, "error")
    assert error.type == "Odd" and error.message == "z \\udcff" and "Odd: z \\udcff" in error.traceback
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_ERROR

    # Printing one shows the escape instead of raising UnicodeEncodeError in the code.
    events = await api.run(session, "try:\n    raise ValueError('p \\udc80')\nexcept ValueError as exc:\n    print(exc)")
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_OK
    assert stdout(events) == b"p \\udc80\n"

    # A host call whose method is not UTF-8 fails in the sandbox, not on the wire.
    code = (
        "from sandbox_agent.interpreter import host\n"
        "try:\n    host.call('skills.\\udc80', {})\nexcept ValueError as exc:\n    print('refused:', exc)\n"
    )
    events = await api.run(session, code)
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_OK
    assert stdout(events).startswith(b"refused: method must be valid UTF-8")

    # The session is still usable after all of it.
    assert stdout(await api.run(session, "print('still here')")) == b"still here\n"


async def test_an_artifact_of_the_documented_limit_works_from_sandboxed_code(client):
    api, session, server = client
    assert limits.MAX_ARTIFACT_BYTES == DEFAULT_MAX_ARTIFACT_BYTES == 64 * MIB
    code = (
        "import hashlib\n"
        f"data = bytes(range(256)) * ({limits.MAX_ARTIFACT_BYTES} // 256)\n"
        "info = artifacts.save('big.bin', data)\n"
        "back = artifacts.load('big.bin')\n"
        "print(info['size_bytes'], len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())\n"
    )
    events = await api.run(session, code, timeout=300)
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_OK, _of(events, "error")
    assert stdout(events).decode().split() == [str(64 * MIB), str(64 * MIB), "True"]
    expected = hashlib.sha256(bytes(range(256)) * (64 * MIB // 256)).hexdigest()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stored = await artifact_pb2_grpc.ArtifactServiceStub(channel).GetArtifact(
            artifact_pb2.GetArtifactRequest(name="artifacts/big.bin"), timeout=30
        )
    assert stored.artifact.size_bytes == 64 * MIB and stored.artifact.sha256 == expected


async def test_past_the_limit_the_sandbox_raises_artifact_too_large(client):
    api, session, _ = client
    code = (
        f"data = b'x' * ({limits.MAX_ARTIFACT_BYTES} + 1)\n"
        "try:\n    artifacts.save('huge.bin', data)\n"
        "except ArtifactTooLargeError as exc:\n    print(type(exc).__name__, exc)\n"
        # JSON artifacts are parsed whole on the server: 16 MiB, refused there.
        "try:\n    artifacts.save('huge.json', ['x' * 1024] * (17 * 1024))\n"
        "except ArtifactTooLargeError as exc:\n    print('json:', type(exc).__name__)\n"
        "print(artifacts.exists('huge.bin'), artifacts.exists('huge.json'))\n"
    )
    events = await api.run(session, code, timeout=300)
    assert _finished(events).status == execute_pb2.EXECUTION_STATUS_OK, _of(events, "error")
    lines = stdout(events).decode().splitlines()
    assert lines[0] == (
        f"ArtifactTooLargeError artifact 'huge.bin' is {64 * MIB + 1} bytes; the limit is {64 * MIB} bytes (64 MiB)"
    )
    assert lines[1:] == ["json: ArtifactTooLargeError", "False False"]
