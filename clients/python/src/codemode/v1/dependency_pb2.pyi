from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AddDependencyRequest(_message.Message):
    __slots__ = ("session", "package")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    session: str
    package: str
    def __init__(self, session: _Optional[str] = ..., package: _Optional[str] = ...) -> None: ...

class AddDependencyResponse(_message.Message):
    __slots__ = ("package", "already_present", "dependencies")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    package: str
    already_present: bool
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, package: _Optional[str] = ..., already_present: _Optional[bool] = ..., dependencies: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class ListDependenciesResponse(_message.Message):
    __slots__ = ("dependencies",)
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dependencies: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncDependenciesRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class SyncDependenciesResponse(_message.Message):
    __slots__ = ("installed", "dependencies")
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    installed: _containers.RepeatedScalarFieldContainer[str]
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed: _Optional[_Iterable[str]] = ..., dependencies: _Optional[_Iterable[str]] = ...) -> None: ...
