"""SkillStoreService: the gRPC face of SkillLibrary.

Handlers only translate between protos and SkillLibrary; validation,
versioning and tenant scoping live in the library so host calls from
sandboxes obey the same rules. Store errors are ServiceErrors, so the
registration wrapper maps them to their status codes and ErrorInfo.
"""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from codemode_protos.v1 import skill_pb2, skill_pb2_grpc
from server.identity import caller
from server.skills.library import SkillLibrary
from server.storage.errors import InvalidArgumentError, SkillInvalidError
from server.storage.records import SkillRecord

NAME_PREFIX = "skills/"


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def skill_to_proto(record: SkillRecord, *, with_source: bool = True) -> skill_pb2.Skill:
    return skill_pb2.Skill(
        name=NAME_PREFIX + record.name,
        description=record.description,
        source=record.source if with_source else "",
        parameters=[
            skill_pb2.SkillParameter(name=p.name, type=p.type, default=p.default, required=p.required)
            for p in record.parameters
        ],
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        etag=record.etag,
        version=record.version,
    )


def skill_id_from_name(name: str, field: str = "name") -> str:
    """"skills/fetch_json" -> "fetch_json"; the bare id is refused so names stay unambiguous."""
    if not name.startswith(NAME_PREFIX):
        raise SkillInvalidError(f"skill name {name!r} must have the form 'skills/{{skill}}'", field=field)
    return name[len(NAME_PREFIX):]


class SkillStoreService(skill_pb2_grpc.SkillStoreServiceServicer):
    def __init__(self, library: SkillLibrary) -> None:
        self._library = library

    def _tenant(self, tenant: str) -> str:
        """The caller's tenant; `tenant` is only an operator's override (server/identity/caller.py)."""
        return caller.tenant_for(tenant)

    async def CreateSkill(
        self, request: skill_pb2.CreateSkillRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.CreateSkillResponse:
        if request.skill_id and request.skill.name:
            if skill_id_from_name(request.skill.name, "skill.name") != request.skill_id:
                raise InvalidArgumentError("skill_id and skill.name disagree", field="skill_id")
        skill_id = request.skill_id or skill_id_from_name(request.skill.name, "skill.name")
        record = await self._library.create(
            self._tenant(request.tenant), skill_id, request.skill.source, request.skill.description
        )
        return skill_pb2.CreateSkillResponse(skill=skill_to_proto(record))

    async def GetSkill(
        self, request: skill_pb2.GetSkillRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.GetSkillResponse:
        record = await self._library.get(self._tenant(request.tenant), skill_id_from_name(request.name))
        return skill_pb2.GetSkillResponse(skill=skill_to_proto(record))

    async def ListSkills(
        self, request: skill_pb2.ListSkillsRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.ListSkillsResponse:
        records, token = await self._library.list(
            self._tenant(request.tenant), request.page_size, request.page_token
        )
        return skill_pb2.ListSkillsResponse(
            skills=[skill_to_proto(r, with_source=False) for r in records], next_page_token=token
        )

    async def SearchSkills(
        self, request: skill_pb2.SearchSkillsRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.SearchSkillsResponse:
        results, ranker, token = await self._library.search_page(
            self._tenant(request.tenant), request.query, request.page_size, request.page_token
        )
        return skill_pb2.SearchSkillsResponse(
            results=[
                skill_pb2.SkillSearchResult(skill=skill_to_proto(r, with_source=False), score=s)
                for r, s in results
            ],
            ranker=ranker,
            next_page_token=token,
        )

    async def UpdateSkill(
        self, request: skill_pb2.UpdateSkillRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.UpdateSkillResponse:
        paths = set(request.update_mask.paths) or {"description", "source"}
        unknown = paths - {"description", "source"}
        if unknown:
            raise InvalidArgumentError(
                f"update_mask may name only 'description' and 'source', not {sorted(unknown)}",
                field="update_mask",
            )
        record = await self._library.update(
            self._tenant(request.tenant),
            skill_id_from_name(request.skill.name, "skill.name"),
            source=request.skill.source if "source" in paths else None,
            description=request.skill.description if "description" in paths else None,
            etag=request.skill.etag,
        )
        return skill_pb2.UpdateSkillResponse(skill=skill_to_proto(record))

    async def DeleteSkill(
        self, request: skill_pb2.DeleteSkillRequest, context: grpc.aio.ServicerContext
    ) -> skill_pb2.DeleteSkillResponse:
        await self._library.delete(
            self._tenant(request.tenant), skill_id_from_name(request.name), request.etag
        )
        return skill_pb2.DeleteSkillResponse()


def register(server: grpc.aio.Server, library: SkillLibrary) -> str:
    from server.registration import register_servicer

    return register_servicer(
        server,
        skill_pb2_grpc.add_SkillStoreServiceServicer_to_server,
        SkillStoreService(library),
    )
