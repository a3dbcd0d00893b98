import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SandboxKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_KIND_UNSPECIFIED: _ClassVar[SandboxKind]
    SANDBOX_KIND_PROCESS: _ClassVar[SandboxKind]
    SANDBOX_KIND_DOCKER: _ClassVar[SandboxKind]
SANDBOX_KIND_UNSPECIFIED: SandboxKind
SANDBOX_KIND_PROCESS: SandboxKind
SANDBOX_KIND_DOCKER: SandboxKind

class Session(_message.Message):
    __slots__ = ("name", "state", "state_message", "config", "capabilities", "create_time", "last_use_time", "expire_time", "tenant", "labels", "interpreter_generation", "created_by", "last_install")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Session.State]
        STATE_STARTING: _ClassVar[Session.State]
        STATE_READY: _ClassVar[Session.State]
        STATE_BUSY: _ClassVar[Session.State]
        STATE_FAILED: _ClassVar[Session.State]
        STATE_CLOSED: _ClassVar[Session.State]
        STATE_INSTALLING: _ClassVar[Session.State]
    STATE_UNSPECIFIED: Session.State
    STATE_STARTING: Session.State
    STATE_READY: Session.State
    STATE_BUSY: Session.State
    STATE_FAILED: Session.State
    STATE_CLOSED: Session.State
    STATE_INSTALLING: Session.State
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    LAST_INSTALL_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: Session.State
    state_message: str
    config: SessionConfig
    capabilities: Capabilities
    create_time: _timestamp_pb2.Timestamp
    last_use_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    tenant: str
    labels: _containers.ScalarMap[str, str]
    interpreter_generation: int
    created_by: str
    last_install: DependencyInstall
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[Session.State, str]] = ..., state_message: _Optional[str] = ..., config: _Optional[_Union[SessionConfig, _Mapping]] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_use_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., interpreter_generation: _Optional[int] = ..., created_by: _Optional[str] = ..., last_install: _Optional[_Union[DependencyInstall, _Mapping]] = ...) -> None: ...

class DependencyInstall(_message.Message):
    __slots__ = ("state", "packages", "installed", "error_message", "error_reason", "start_time", "end_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[DependencyInstall.State]
        STATE_RUNNING: _ClassVar[DependencyInstall.State]
        STATE_SUCCEEDED: _ClassVar[DependencyInstall.State]
        STATE_FAILED: _ClassVar[DependencyInstall.State]
    STATE_UNSPECIFIED: DependencyInstall.State
    STATE_RUNNING: DependencyInstall.State
    STATE_SUCCEEDED: DependencyInstall.State
    STATE_FAILED: DependencyInstall.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    state: DependencyInstall.State
    packages: _containers.RepeatedScalarFieldContainer[str]
    installed: _containers.RepeatedScalarFieldContainer[str]
    error_message: str
    error_reason: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[DependencyInstall.State, str]] = ..., packages: _Optional[_Iterable[str]] = ..., installed: _Optional[_Iterable[str]] = ..., error_message: _Optional[str] = ..., error_reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("sandbox_kind", "timeout", "memory_limit_bytes", "cpu_quota", "pids_limit", "network_disabled", "allow_runtime_deps", "deps", "sync_deps_on_start", "output_budget_bytes", "idle_ttl", "image")
    SANDBOX_KIND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_DISABLED_FIELD_NUMBER: _ClassVar[int]
    ALLOW_RUNTIME_DEPS_FIELD_NUMBER: _ClassVar[int]
    DEPS_FIELD_NUMBER: _ClassVar[int]
    SYNC_DEPS_ON_START_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    sandbox_kind: SandboxKind
    timeout: _duration_pb2.Duration
    memory_limit_bytes: int
    cpu_quota: float
    pids_limit: int
    network_disabled: bool
    allow_runtime_deps: bool
    deps: _containers.RepeatedScalarFieldContainer[str]
    sync_deps_on_start: bool
    output_budget_bytes: int
    idle_ttl: _duration_pb2.Duration
    image: str
    def __init__(self, sandbox_kind: _Optional[_Union[SandboxKind, str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., memory_limit_bytes: _Optional[int] = ..., cpu_quota: _Optional[float] = ..., pids_limit: _Optional[int] = ..., network_disabled: _Optional[bool] = ..., allow_runtime_deps: _Optional[bool] = ..., deps: _Optional[_Iterable[str]] = ..., sync_deps_on_start: _Optional[bool] = ..., output_budget_bytes: _Optional[int] = ..., idle_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., image: _Optional[str] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("timeout", "process_isolation", "container_isolation", "network_isolation", "memory_limit", "cpu_limit", "reset", "deps_install", "filesystem_isolation", "pids_limit", "disk_limit", "syscall_filter", "unconfined")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ISOLATION_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ISOLATION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ISOLATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    DEPS_INSTALL_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEM_ISOLATION_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISK_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_FILTER_FIELD_NUMBER: _ClassVar[int]
    UNCONFINED_FIELD_NUMBER: _ClassVar[int]
    timeout: bool
    process_isolation: bool
    container_isolation: bool
    network_isolation: bool
    memory_limit: bool
    cpu_limit: bool
    reset: bool
    deps_install: bool
    filesystem_isolation: bool
    pids_limit: bool
    disk_limit: bool
    syscall_filter: bool
    unconfined: bool
    def __init__(self, timeout: _Optional[bool] = ..., process_isolation: _Optional[bool] = ..., container_isolation: _Optional[bool] = ..., network_isolation: _Optional[bool] = ..., memory_limit: _Optional[bool] = ..., cpu_limit: _Optional[bool] = ..., reset: _Optional[bool] = ..., deps_install: _Optional[bool] = ..., filesystem_isolation: _Optional[bool] = ..., pids_limit: _Optional[bool] = ..., disk_limit: _Optional[bool] = ..., syscall_filter: _Optional[bool] = ..., unconfined: _Optional[bool] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("session", "session_id", "request_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session: Session
    session_id: str
    request_id: str
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class WaitSessionRequest(_message.Message):
    __slots__ = ("name", "timeout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    timeout: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WaitSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResetSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
