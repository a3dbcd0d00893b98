"""A client deadline that passes during an Execute, through a real `python -m server`:
the server's access and audit lines never report it as INTERNAL or UNKNOWN (issue 10: a
client cancel or deadline is never INTERNAL), and the wind-down's audit line says how
the execution ended.

The client sees DEADLINE_EXCEEDED from its own timer; the server's status never reaches
it, so the server's log (and metrics, which share server/rpc_status.py) is the only place
the server's view shows. The client's deadline fires and cancels the stream a few
milliseconds before the server's copy of it (the grpc-timeout header, counted from when
the request arrived) has passed; server/rpc_status.py `cancelled_code` counts a cancel
that close to the deadline as the deadline's, so the line says DEADLINE_EXCEEDED."""

from __future__ import annotations

import time

import grpc
import pytest

from codemode_protos.v1 import (
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from tests.helpers.sessions import wait_ready_sync
from tests.server.test_logging import (
    EXECUTE,
    QUIET,
    LoggedServer,
    access,
    audit,
    json_lines,
)


@pytest.fixture(scope="module")
def deadline_lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Runs the scenario once: an Execute whose 2 s deadline passes while the code sleeps,
    then an Execute once the session is free again; returns the server's log lines."""
    tmp_path = tmp_path_factory.mktemp("deadline")
    stderr = tmp_path / "stderr.log"
    with LoggedServer(["--no-auth", "--log-format", "json", *QUIET], tmp_path / "data", stderr) as server:
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            execute = execute_pb2_grpc.ExecuteServiceStub(channel)
            name = sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=90).session.name
            wait_ready_sync(sessions, name)

            slow = execute.Execute(execute_pb2.ExecuteRequest(session=name, code="import time\ntime.sleep(60)"), timeout=2)
            with pytest.raises(grpc.RpcError) as missed:
                list(slow)
            assert missed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

            # The deadline stops the code like a cancel: once it has stopped, the session runs again.
            for _ in range(200):
                try:
                    after = list(execute.Execute(execute_pb2.ExecuteRequest(session=name, code="print('next')"), timeout=30))
                    break
                except grpc.RpcError as busy:
                    assert busy.code() == grpc.StatusCode.FAILED_PRECONDITION, busy
                    time.sleep(0.05)
            else:
                raise AssertionError("the session stayed busy after the deadline")
            assert after[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
        # The wind-down writes the call's audit line again once the code has stopped.
        deadline = time.monotonic() + 30
        while not [line for line in audit(json_lines(stderr)) if line.get("execution_status") == "EXECUTION_STATUS_CANCELLED"]:
            assert time.monotonic() < deadline, "the wind-down's audit line never came"
            time.sleep(0.1)
    return json_lines(stderr)


def test_an_execute_whose_deadline_passes_is_never_logged_internal(deadline_lines: list[dict]) -> None:
    lines = deadline_lines
    logged = access(lines)
    statuses = [(line["method"], line["status"]) for line in logged]
    assert not [entry for entry in statuses if entry[1] in ("INTERNAL", "UNKNOWN")], statuses
    executes = [line["status"] for line in logged if line["method"] == EXECUTE]
    missed = [status for status in executes if status in ("DEADLINE_EXCEEDED", "CANCELLED")]
    assert missed == ["DEADLINE_EXCEEDED"] and executes[-1] == "OK", executes
    assert next(line for line in logged if line["status"] == missed[0])["duration_ms"] >= 1500

    # (SESSION_BUSY refusals of the retry loop, if any, are audited too: left out.)
    audited = [line for line in audit(lines) if line["method"] == EXECUTE and line["status"] != "FAILED_PRECONDITION"]
    assert [line["status"] for line in audited] == [missed[0], missed[0], "OK"], audited
    assert [line["execution_status"] for line in audited] == [
        "", "EXECUTION_STATUS_CANCELLED", "EXECUTION_STATUS_OK"]
    assert audited[0]["execution"] == audited[1]["execution"] != audited[2]["execution"]
    # No line of the server's log reports an internal error (an errorId) for it.
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")], lines

