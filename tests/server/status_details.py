"""What a generic gRPC client reads from a failed call: google.rpc details, server children."""

from __future__ import annotations

import os

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.errors import detail_of
from tests.server.helpers import error_info


def detail(error: grpc.aio.AioRpcError, message_type: type[Message]) -> Message:
    """The one detail of `message_type` in the call's google.rpc.Status (asserts it is there)."""
    found = detail_of(rpc_status.from_call(error), message_type)
    assert found is not None, f"no {message_type.DESCRIPTOR.full_name} in {error!r}"
    return found


def assert_beyond_maximum(error: grpc.aio.AioRpcError, field: str, maximum: str) -> None:
    """INVALID_ARGUMENT naming `field` and `maximum` in ErrorInfo and in a BadRequest."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = error_info(error)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.metadata["field"] == field
    assert info.metadata["maximum"] == maximum
    assert maximum in error.details()
    bad_request = detail(error, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == [field]


def assert_quota_exceeded(
    error: grpc.aio.AioRpcError, tenant: str, quota: str, limit: int, retryable: bool = True
) -> float | None:
    """RESOURCE_EXHAUSTED with QuotaFailure, and RetryInfo when waiting frees the quota
    (`retryable`: a window resets, a session expires); returns the retry delay in seconds.
    Quotas on stored things (skills, artifact bytes) free only by deleting: no RetryInfo."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    info = error_info(error)
    assert info.reason == "QUOTA_EXCEEDED"
    assert (info.metadata["tenant"], info.metadata["quota"], info.metadata["limit"]) == (tenant, quota, str(limit))
    failure = detail(error, error_details_pb2.QuotaFailure)
    assert [(v.subject, v.quota_id) for v in failure.violations] == [(f"tenant:{tenant}", quota)]
    if not retryable:
        assert detail_of(rpc_status.from_call(error), error_details_pb2.RetryInfo) is None
        return None
    retry = detail(error, error_details_pb2.RetryInfo)
    delay = retry.retry_delay.ToNanoseconds() / 1e9
    assert delay > 0
    return delay


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (every sandbox the server starts is one)."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return children
