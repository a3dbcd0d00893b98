"""The session's execution records: bounded, and never stuck behind one the server lost.

Unit level: the table is plain bookkeeping (the end-to-end behaviour of replay and
attach is in test_execution_attach.py)."""

from __future__ import annotations

from codemode_protos.v1 import execute_pb2
from server import executions
from server.executions import ExecutionRecord, ExecutionTable, code_digest


def _record(table: ExecutionTable, execution_id: str, request_id: str = "") -> ExecutionRecord:
    record = ExecutionRecord(id=execution_id, session_name="sessions/s", request_id=request_id, code_sha256=code_digest("1"))
    table.add(record)
    return record


async def test_records_past_retention_are_forgotten_and_a_lost_one_does_not_block_them(monkeypatch) -> None:
    monkeypatch.setattr(executions, "RETENTION_SECONDS", 0.0)
    table = ExecutionTable()
    lost = _record(table, "lost", request_id="r1")
    lost.abandon()  # e.g. the agent became unreachable: no `finished` will ever come
    done = _record(table, "done")
    done.finish(execute_pb2.ExecuteResponse(sequence=2, finished=execute_pb2.ExecutionFinished()))
    running = _record(table, "running")
    table.prune()
    assert table.get("lost") is None and table.by_request("r1") is None and table.get("done") is None
    assert table.get("running") is running and table.running() is running


async def test_the_table_is_capped_without_forgetting_the_running_one(monkeypatch) -> None:
    monkeypatch.setattr(executions, "MAX_RECORDS", 3)
    table = ExecutionTable()
    for i in range(5):
        _record(table, f"e{i}").finish(execute_pb2.ExecuteResponse(sequence=1, finished=execute_pb2.ExecutionFinished()))
    running = _record(table, "now")
    assert len(table) == 3 and table.get("e0") is None and table.get("now") is running
