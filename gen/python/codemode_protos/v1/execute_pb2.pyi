import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_STREAM_UNSPECIFIED: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDOUT: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDERR: _ClassVar[OutputStream]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_OK: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_ERROR: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_TIMEOUT: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SANDBOX_DIED: _ClassVar[ExecutionStatus]
OUTPUT_STREAM_UNSPECIFIED: OutputStream
OUTPUT_STREAM_STDOUT: OutputStream
OUTPUT_STREAM_STDERR: OutputStream
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_OK: ExecutionStatus
EXECUTION_STATUS_ERROR: ExecutionStatus
EXECUTION_STATUS_TIMEOUT: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
EXECUTION_STATUS_SANDBOX_DIED: ExecutionStatus

class ExecuteRequest(_message.Message):
    __slots__ = ("session", "code", "timeout", "request_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session: str
    code: str
    timeout: _duration_pb2.Duration
    request_id: str
    def __init__(self, session: _Optional[str] = ..., code: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("sequence", "started", "output", "result", "error", "heartbeat", "finished")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    started: ExecutionStarted
    output: ExecutionOutput
    result: ExecutionResult
    error: ExecutionError
    heartbeat: Heartbeat
    finished: ExecutionFinished
    def __init__(self, sequence: _Optional[int] = ..., started: _Optional[_Union[ExecutionStarted, _Mapping]] = ..., output: _Optional[_Union[ExecutionOutput, _Mapping]] = ..., result: _Optional[_Union[ExecutionResult, _Mapping]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., finished: _Optional[_Union[ExecutionFinished, _Mapping]] = ...) -> None: ...

class ExecutionStarted(_message.Message):
    __slots__ = ("execution", "start_time", "interpreter_generation", "request_id")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    execution: str
    start_time: _timestamp_pb2.Timestamp
    interpreter_generation: int
    request_id: str
    def __init__(self, execution: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interpreter_generation: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecutionOutput(_message.Message):
    __slots__ = ("stream", "data", "dropped_bytes_before")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    stream: OutputStream
    data: bytes
    dropped_bytes_before: int
    def __init__(self, stream: _Optional[_Union[OutputStream, str]] = ..., data: _Optional[bytes] = ..., dropped_bytes_before: _Optional[int] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("json", "repr", "type_name")
    JSON_FIELD_NUMBER: _ClassVar[int]
    REPR_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    json: str
    repr: str
    type_name: str
    def __init__(self, json: _Optional[str] = ..., repr: _Optional[str] = ..., type_name: _Optional[str] = ...) -> None: ...

class ExecutionError(_message.Message):
    __slots__ = ("type", "message", "traceback", "line")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    traceback: str
    line: int
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., line: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecutionFinished(_message.Message):
    __slots__ = ("status", "duration", "stdout_bytes", "stderr_bytes", "stdout_truncated_bytes", "stderr_truncated_bytes", "state_lost", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TRUNCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_TRUNCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_LOST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: ExecutionStatus
    duration: _duration_pb2.Duration
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated_bytes: int
    stderr_truncated_bytes: int
    state_lost: bool
    message: str
    def __init__(self, status: _Optional[_Union[ExecutionStatus, str]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., stdout_truncated_bytes: _Optional[int] = ..., stderr_truncated_bytes: _Optional[int] = ..., state_lost: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class AttachExecutionRequest(_message.Message):
    __slots__ = ("execution", "after_sequence")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    execution: str
    after_sequence: int
    def __init__(self, execution: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: str
    def __init__(self, execution: _Optional[str] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...
