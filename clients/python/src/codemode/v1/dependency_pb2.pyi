from codemode.v1 import session_pb2 as _session_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddDependencyRequest(_message.Message):
    __slots__ = ("session", "package")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    session: str
    package: str
    def __init__(self, session: _Optional[str] = ..., package: _Optional[str] = ...) -> None: ...

class AddDependencyResponse(_message.Message):
    __slots__ = ("package", "already_present", "dependencies", "session")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    package: str
    already_present: bool
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    session: _session_pb2.Session
    def __init__(self, package: _Optional[str] = ..., already_present: _Optional[bool] = ..., dependencies: _Optional[_Iterable[str]] = ..., session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class RemoveDependencyRequest(_message.Message):
    __slots__ = ("session", "package")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    session: str
    package: str
    def __init__(self, session: _Optional[str] = ..., package: _Optional[str] = ...) -> None: ...

class RemoveDependencyResponse(_message.Message):
    __slots__ = ("removed", "dependencies")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[bool] = ..., dependencies: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDependenciesRequest(_message.Message):
    __slots__ = ("session", "page_size", "page_token")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session: str
    page_size: int
    page_token: str
    def __init__(self, session: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDependenciesResponse(_message.Message):
    __slots__ = ("dependencies", "next_page_token")
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, dependencies: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SyncDependenciesRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class SyncDependenciesResponse(_message.Message):
    __slots__ = ("dependencies", "missing", "session")
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    session: _session_pb2.Session
    def __init__(self, dependencies: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...
