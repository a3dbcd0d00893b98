"""Error mapping from real google.rpc.Status bytes (the server path is in test_client_e2e)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

import codemode
from codemode import errors
from codemode.v1 import error_reason_pb2


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


def _status_bytes(code: grpc.StatusCode, *details) -> tuple:
    packed = []
    for message in details:
        detail = any_pb2.Any()
        detail.Pack(message)
        packed.append(detail)
    status = status_pb2.Status(code=code.value[0], message="m", details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_retry_info_becomes_retry_delay_in_seconds():
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(1500)
    error = errors.error_for_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "m",
        _status_bytes(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            error_details_pb2.ErrorInfo(reason="SESSION_LIMIT_REACHED", domain="codemode.dev"),
            error_details_pb2.RetryInfo(retry_delay=delay),
        ),
    )
    assert error.reason == "SESSION_LIMIT_REACHED" and error.retry_delay == 1.5
    assert error.field_violations == ()


def test_bad_request_becomes_field_violations():
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="session.labels", description="too long"),
            error_details_pb2.BadRequest.FieldViolation(field="code", description="empty", reason="EMPTY"),
        ]
    )
    trailing = _status_bytes(grpc.StatusCode.INVALID_ARGUMENT, bad)
    error = errors.error_for_status(grpc.StatusCode.INVALID_ARGUMENT, "m", trailing)
    assert isinstance(error, errors.InvalidArgumentError)
    assert error.field_violations == (
        errors.FieldViolation("session.labels", "too long"),
        errors.FieldViolation("code", "empty", "EMPTY"),
    )
    assert error.retry_delay is None and error.reason is None


def test_retry_advice_counts_even_beside_a_foreign_error_info():
    """RetryInfo has no domain: a proxy's advice to wait is still advice to wait."""
    delay = duration_pb2.Duration(seconds=2)
    error = errors.error_for_status(
        grpc.StatusCode.UNAVAILABLE,
        "m",
        _status_bytes(
            grpc.StatusCode.UNAVAILABLE,
            error_details_pb2.ErrorInfo(reason="OVERLOADED", domain="proxy.example"),
            error_details_pb2.RetryInfo(retry_delay=delay),
        ),
    )
    assert error.reason is None and error.retry_delay == 2.0


def test_error_reason_constants_are_the_proto_enum():
    """Generated from the enum, so every reason the server may send has a constant."""
    expected = {
        value.name.removeprefix("ERROR_REASON_")
        for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values
        if value.number != 0
    }
    constants = {name: value for name, value in vars(codemode.ErrorReason).items() if name.isupper()}
    assert set(constants) == expected
    assert all(name == value for name, value in constants.items())
    assert codemode.ErrorReason is errors.ErrorReason
    assert codemode.ErrorReason.SESSION_NOT_FOUND == "SESSION_NOT_FOUND"
