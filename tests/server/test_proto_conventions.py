"""The AIP conventions of codemode.v1 (docs/api.md), checked on the descriptors the server
and the clients are generated from, so a field added later cannot quietly break them.

* AIP-141: no unsigned integer field anywhere (sequences, byte counts, generations are
  int64).
* AIP-123: every resource a request refers to (`google.api.resource_reference`) is
  declared, on its message (`google.api.resource`) or, for one without a message of its
  own (Execution), in its file (`google.api.resource_definition`); every resource message
  has `name` as field 1, IDENTIFIER, and every message whose `name` is an IDENTIFIER is a
  resource.
* AIP-203: in a resource message every field the server sets (timestamps, state,
  generations, digests, sizes, what the sandbox enforces) is OUTPUT_ONLY. The rule the
  protos follow: a resource field carries a field_behavior unless the caller sets it;
  those are listed here (`CALLER_SET`), so a new field needs a decision. Timestamps are
  always OUTPUT_ONLY; request messages carry no OUTPUT_ONLY field.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.api import field_behavior_pb2, resource_pb2
from google.protobuf import descriptor

from codemode_protos.v1 import (
    artifact_pb2,
    dependency_pb2,
    error_reason_pb2,
    execute_pb2,
    session_pb2,
    skill_pb2,
)

FILES = [module.DESCRIPTOR for module in (artifact_pb2, dependency_pb2, error_reason_pb2, execute_pb2, session_pb2, skill_pb2)]
FD = descriptor.FieldDescriptor
UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64}
Behavior = field_behavior_pb2.FieldBehavior

#: The resource messages of codemode.v1 and the fields of each that the caller sets.
CALLER_SET = {
    "codemode.v1.Session": {"labels"},
    "codemode.v1.Skill": {"description", "source", "etag"},
    "codemode.v1.Artifact": {"type", "description", "metadata"},
}
#: What the server alone sets, pinned: losing one of these annotations is a regression.
OUTPUT_ONLY = {
    "codemode.v1.Session": {"state", "state_message", "capabilities", "create_time", "last_use_time", "expire_time",
                            "interpreter_generation", "created_by", "last_install"},
    "codemode.v1.Skill": {"parameters", "create_time", "update_time", "version"},
    "codemode.v1.Artifact": {"size_bytes", "sha256", "create_time"},
}


def messages() -> Iterator[descriptor.Descriptor]:
    def walk(message: descriptor.Descriptor) -> Iterator[descriptor.Descriptor]:
        yield message
        for nested in message.nested_types:
            if not nested.GetOptions().map_entry:
                yield from walk(nested)

    for file in FILES:
        assert file.package == "codemode.v1", file.name
        for message in file.message_types_by_name.values():
            yield from walk(message)


def behaviors(field: descriptor.FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def resource_of(message: descriptor.Descriptor) -> resource_pb2.ResourceDescriptor | None:
    options = message.GetOptions()
    return options.Extensions[resource_pb2.resource] if options.HasExtension(resource_pb2.resource) else None


def test_no_field_is_unsigned() -> None:
    found = [f"{message.full_name}.{field.name}" for message in messages() for field in message.fields
             if field.type in UNSIGNED]
    assert len(list(messages())) > 40  # the walk sees the whole API
    assert found == []


def test_every_resource_is_declared_and_named() -> None:
    declared: dict[str, str] = {}
    resources = {}
    for message in messages():
        resource = resource_of(message)
        if resource is not None:
            resources[message.full_name] = message
            declared[resource.type] = resource.pattern[0]
            assert resource.type.startswith("codemode.dev/") and resource.singular and resource.plural, message.full_name
            assert message.fields[0].name == "name" and message.fields[0].number == 1, message.full_name
            assert behaviors(message.fields[0]) == {Behavior.IDENTIFIER}, message.full_name
            assert resource.pattern[0].split("/")[0] == resource.plural, message.full_name
        elif "name" in message.fields_by_name:
            assert Behavior.IDENTIFIER not in behaviors(message.fields_by_name["name"]), (
                f"{message.full_name}.name is an IDENTIFIER, so the message must carry google.api.resource")
    for file in FILES:
        for definition in file.GetOptions().Extensions[resource_pb2.resource_definition]:
            declared[definition.type] = definition.pattern[0]
    assert set(resources) == set(CALLER_SET)
    assert declared == {
        "codemode.dev/Session": "sessions/{session}",
        "codemode.dev/Skill": "skills/{skill}",
        "codemode.dev/Artifact": "artifacts/{artifact}",
        "codemode.dev/Execution": "sessions/{session}/executions/{execution}",
    }
    referenced = {}
    for message in messages():
        for field in message.fields:
            options = field.GetOptions()
            if options.HasExtension(resource_pb2.resource_reference):
                reference = options.Extensions[resource_pb2.resource_reference]
                referenced[f"{message.full_name}.{field.name}"] = reference.type or reference.child_type
    assert referenced and set(referenced.values()) <= set(declared), referenced
    # Every request field that names a resource says which one.
    for message in messages():
        if message.name.endswith("Request"):
            for field in message.fields:
                if field.name in ("name", "session", "execution") and field.type == FD.TYPE_STRING:
                    assert f"{message.full_name}.{field.name}" in referenced, f"{message.full_name}.{field.name}"


def test_output_only_fields_carry_field_behavior() -> None:
    for full_name, caller_set in CALLER_SET.items():
        message = next(m for m in messages() if m.full_name == full_name)
        output_only = set()
        for field in message.fields:
            marked = behaviors(field)
            if field.name in caller_set:
                assert Behavior.OUTPUT_ONLY not in marked, f"{full_name}.{field.name}"
                continue
            assert marked, f"{full_name}.{field.name} has no field_behavior: is it output only, or set by the caller?"
            if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
                assert marked == {Behavior.OUTPUT_ONLY}, f"{full_name}.{field.name}"
            if Behavior.OUTPUT_ONLY in marked:
                assert marked == {Behavior.OUTPUT_ONLY}, f"{full_name}.{field.name}"
                output_only.add(field.name)
        assert output_only == OUTPUT_ONLY[full_name], full_name
    for message in messages():
        if message.name.endswith("Request"):
            for field in message.fields:
                assert Behavior.OUTPUT_ONLY not in behaviors(field), f"{message.full_name}.{field.name}"
