import datetime

from codemode_protos.v1 import execute_pb2 as _execute_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecuteStart(_message.Message):
    __slots__ = ("execution_id", "code", "timeout", "output_budget_bytes", "owner_epoch")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    code: str
    timeout: _duration_pb2.Duration
    output_budget_bytes: int
    owner_epoch: int
    def __init__(self, execution_id: _Optional[str] = ..., code: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., output_budget_bytes: _Optional[int] = ..., owner_epoch: _Optional[int] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("sequence", "started", "output", "result", "error", "finished", "host_call")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    HOST_CALL_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    started: Started
    output: _execute_pb2.ExecutionOutput
    result: _execute_pb2.ExecutionResult
    error: _execute_pb2.ExecutionError
    finished: _execute_pb2.ExecutionFinished
    host_call: HostCall
    def __init__(self, sequence: _Optional[int] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., output: _Optional[_Union[_execute_pb2.ExecutionOutput, _Mapping]] = ..., result: _Optional[_Union[_execute_pb2.ExecutionResult, _Mapping]] = ..., error: _Optional[_Union[_execute_pb2.ExecutionError, _Mapping]] = ..., finished: _Optional[_Union[_execute_pb2.ExecutionFinished, _Mapping]] = ..., host_call: _Optional[_Union[HostCall, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("interpreter_generation", "start_time")
    INTERPRETER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    interpreter_generation: int
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, interpreter_generation: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HostCall(_message.Message):
    __slots__ = ("call_id", "method", "params_json", "payload")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method: str
    params_json: str
    payload: bytes
    def __init__(self, call_id: _Optional[int] = ..., method: _Optional[str] = ..., params_json: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class HostCallResult(_message.Message):
    __slots__ = ("call_id", "result_json", "payload", "error", "execution_id")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    result_json: str
    payload: bytes
    error: HostCallError
    execution_id: str
    def __init__(self, call_id: _Optional[int] = ..., result_json: _Optional[str] = ..., payload: _Optional[bytes] = ..., error: _Optional[_Union[HostCallError, _Mapping]] = ..., execution_id: _Optional[str] = ...) -> None: ...

class HostCallError(_message.Message):
    __slots__ = ("type", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("execution_id", "after_sequence", "answers_host_calls")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_HOST_CALLS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_sequence: int
    answers_host_calls: bool
    def __init__(self, execution_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., answers_host_calls: _Optional[bool] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("execution_id", "owner_epoch")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    owner_epoch: int
    def __init__(self, execution_id: _Optional[str] = ..., owner_epoch: _Optional[int] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class AnswerHostCallResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("owner_epoch",)
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    owner_epoch: int
    def __init__(self, owner_epoch: _Optional[int] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("interpreter_generation",)
    INTERPRETER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    interpreter_generation: int
    def __init__(self, interpreter_generation: _Optional[int] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ("owner_epoch",)
    OWNER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    owner_epoch: int
    def __init__(self, owner_epoch: _Optional[int] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("session_id", "interpreter_generation", "interpreter_alive", "python_version", "agent_pid", "interpreter_pid", "running_execution_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_ALIVE_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_PID_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_PID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    interpreter_generation: int
    interpreter_alive: bool
    python_version: str
    agent_pid: int
    interpreter_pid: int
    running_execution_id: str
    def __init__(self, session_id: _Optional[str] = ..., interpreter_generation: _Optional[int] = ..., interpreter_alive: _Optional[bool] = ..., python_version: _Optional[str] = ..., agent_pid: _Optional[int] = ..., interpreter_pid: _Optional[int] = ..., running_execution_id: _Optional[str] = ...) -> None: ...
