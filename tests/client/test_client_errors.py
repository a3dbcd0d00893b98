"""Error mapping from real google.rpc.Status bytes (the server path is in test_client_e2e)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from codemode import errors


def _trailing(code: grpc.StatusCode, message: str, reason: str, domain: str = "codemode.dev", **meta: str):
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=meta))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


@pytest.mark.parametrize(
    "code, cls",
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgumentError),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExistsError),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhaustedError),
        (grpc.StatusCode.UNAUTHENTICATED, errors.UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDeniedError),
        (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, errors.ExecutionCancelledError),
        (grpc.StatusCode.ABORTED, errors.AbortedError),
        (grpc.StatusCode.INTERNAL, errors.InternalError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.UnimplementedError),
    ],
)
def test_code_maps_to_class(code, cls):
    error = errors.error_for_status(code, "msg", _trailing(code, "msg", "SOMETHING"))
    assert type(error) is cls and isinstance(error, errors.CodemodeError)
    assert error.code is code and error.reason == "SOMETHING" and error.message == "msg"


def test_reason_and_metadata_are_read_from_error_info():
    error = errors.error_for_status(
        grpc.StatusCode.INVALID_ARGUMENT, "empty", _trailing(grpc.StatusCode.INVALID_ARGUMENT, "empty", "EMPTY_CODE", field="code")
    )
    assert error.reason == "EMPTY_CODE"
    assert error.metadata == {"field": "code"}
    assert "EMPTY_CODE" in str(error)


def test_full_enum_name_is_shortened():
    error = errors.error_for_status(grpc.StatusCode.NOT_FOUND, "m", _trailing(grpc.StatusCode.NOT_FOUND, "m", "ERROR_REASON_SESSION_NOT_FOUND"))
    assert error.reason == "SESSION_NOT_FOUND"


def test_foreign_domain_and_missing_details_give_no_reason():
    foreign = errors.error_for_status(grpc.StatusCode.UNAVAILABLE, "m", _trailing(grpc.StatusCode.UNAVAILABLE, "m", "X", domain="proxy.example"))
    assert foreign.reason is None
    plain = errors.error_for_status(grpc.StatusCode.UNAVAILABLE, "m", (("other", "v"),))
    assert plain.reason is None and isinstance(plain, errors.UnavailableError)
    garbled = errors.error_for_status(grpc.StatusCode.INTERNAL, "m", (("grpc-status-details-bin", b"\xff\xff"),))
    assert garbled.reason is None
