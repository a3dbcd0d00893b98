"""ArtifactService: chunked upload/download over ArtifactLibrary.

Data moves in chunks of at most 1 MiB so no message nears gRPC's 4 MiB
default limit; the size limit is enforced while receiving, so an oversized
upload is refused before it is fully buffered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format, struct_pb2

from codemode.v1 import artifact_pb2, artifact_pb2_grpc
from server.artifacts.library import ArtifactLibrary
from server.services.skill_service import timestamp
from server.storage.errors import ArtifactInvalidError
from server.storage.records import ArtifactRecord

NAME_PREFIX = "artifacts/"
CHUNK_BYTES = 1024 * 1024

_TYPE_TO_PROTO = {
    "bytes": artifact_pb2.ARTIFACT_TYPE_BYTES,
    "text": artifact_pb2.ARTIFACT_TYPE_TEXT,
    "json": artifact_pb2.ARTIFACT_TYPE_JSON,
}
_PROTO_TO_TYPE = {v: k for k, v in _TYPE_TO_PROTO.items()}
_PROTO_TO_TYPE[artifact_pb2.ARTIFACT_TYPE_UNSPECIFIED] = "bytes"


def artifact_to_proto(record: ArtifactRecord) -> artifact_pb2.Artifact:
    metadata = struct_pb2.Struct()
    metadata.update(record.metadata)
    return artifact_pb2.Artifact(
        name=NAME_PREFIX + record.name,
        type=_TYPE_TO_PROTO[record.type],
        description=record.description,
        metadata=metadata,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        create_time=timestamp(record.create_time),
    )


def artifact_id_from_name(name: str) -> str:
    if not name.startswith(NAME_PREFIX):
        raise ArtifactInvalidError(
            f"artifact name {name!r} must have the form 'artifacts/{{artifact}}'", field="name"
        )
    return name[len(NAME_PREFIX):]


class ArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, library: ArtifactLibrary, default_tenant: str) -> None:
        self._library = library
        self._default_tenant = default_tenant

    def _tenant(self, tenant: str) -> str:
        return tenant or self._default_tenant

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[artifact_pb2.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> artifact_pb2.UploadArtifactResponse:
        header: artifact_pb2.UploadArtifactRequest | None = None
        chunks: list[bytes] = []
        size = 0
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if header is None:
                if part != "artifact":
                    raise ArtifactInvalidError(
                        "the first UploadArtifactRequest must carry the artifact", field="artifact"
                    )
                header = message
                artifact_id_from_name(message.artifact.name)  # fail before any data arrives
                continue
            if part != "chunk":
                raise ArtifactInvalidError("only the first message may carry the artifact", field="artifact")
            if len(message.chunk) > CHUNK_BYTES:
                raise ArtifactInvalidError(
                    f"chunks must be at most {CHUNK_BYTES} bytes", field="chunk"
                )
            size += len(message.chunk)
            self._library.check_size(size)
            chunks.append(message.chunk)
        if header is None:
            raise ArtifactInvalidError("empty upload: no artifact was sent", field="artifact")
        art = header.artifact
        type_ = _PROTO_TO_TYPE.get(art.type)
        if type_ is None:
            raise ArtifactInvalidError(f"unknown artifact type {art.type}", field="artifact.type")
        record = await self._library.save(
            self._tenant(header.tenant),
            artifact_id_from_name(art.name),
            type_,
            b"".join(chunks),
            art.description,
            json_format.MessageToDict(art.metadata) if art.HasField("metadata") else {},
        )
        return artifact_pb2.UploadArtifactResponse(artifact=artifact_to_proto(record))

    async def DownloadArtifact(
        self, request: artifact_pb2.DownloadArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifact_pb2.DownloadArtifactResponse]:
        record, data = await self._library.read(
            self._tenant(request.tenant), artifact_id_from_name(request.name)
        )
        yield artifact_pb2.DownloadArtifactResponse(artifact=artifact_to_proto(record))
        view = memoryview(data)
        for offset in range(0, len(data), CHUNK_BYTES):
            yield artifact_pb2.DownloadArtifactResponse(chunk=bytes(view[offset : offset + CHUNK_BYTES]))

    async def GetArtifact(
        self, request: artifact_pb2.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifact_pb2.GetArtifactResponse:
        record = await self._library.get(self._tenant(request.tenant), artifact_id_from_name(request.name))
        return artifact_pb2.GetArtifactResponse(artifact=artifact_to_proto(record))

    async def ListArtifacts(
        self, request: artifact_pb2.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> artifact_pb2.ListArtifactsResponse:
        records, token = await self._library.list(
            self._tenant(request.tenant), request.page_size, request.page_token
        )
        return artifact_pb2.ListArtifactsResponse(
            artifacts=[artifact_to_proto(r) for r in records], next_page_token=token
        )

    async def DeleteArtifact(
        self, request: artifact_pb2.DeleteArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifact_pb2.DeleteArtifactResponse:
        await self._library.delete(self._tenant(request.tenant), artifact_id_from_name(request.name))
        return artifact_pb2.DeleteArtifactResponse()


def register(server: grpc.aio.Server, library: ArtifactLibrary, default_tenant: str) -> str:
    from server.registration import register_servicer

    return register_servicer(
        server,
        artifact_pb2_grpc.add_ArtifactServiceServicer_to_server,
        ArtifactService(library, default_tenant),
    )
