"""ArtifactService: chunked upload/download over ArtifactLibrary.

Data moves in chunks of at most 1 MiB so no message nears gRPC's 4 MiB
default limit. Uploads stream to storage as they arrive (never whole in memory),
and the size limit and quota are enforced while receiving, so an oversized upload
is refused before it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format, struct_pb2

from codemode_protos.v1 import artifact_pb2, artifact_pb2_grpc
from server.artifacts.library import ArtifactLibrary
from server.errors import ServiceError
from server.identity import caller
from server.services.skill_service import timestamp
from server.storage.errors import ArtifactInvalidError
from server.storage.records import ArtifactRecord

NAME_PREFIX = "artifacts/"
CHUNK_BYTES = 1024 * 1024
_DRAIN_SECONDS = 30.0
# After a refusal of a declared size: how long a client may send nothing before it is
# answered (it may be waiting for this answer before it sends any data).
_IDLE_DRAIN_SECONDS = 0.5
# Without a declared size, a client's cancel ends the request stream just as a finished
# upload does; the call's cancellation reaches the servicer a moment later, through
# grpc's completion-queue poller thread. 20 ms proved too short on a loaded 2-core
# machine (CI committed a cancelled upload), so an undeclared upload waits 100 ms.
# Every client we ship declares the size whenever it knows it and skips this wait.
_CANCEL_GRACE_SECONDS = 0.1

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


async def _drain(
    requests: AsyncIterator[artifact_pb2.UploadArtifactRequest], limit_bytes: int, idle_seconds: float | None = None
) -> None:
    """Reads (and drops) what the client still sends before the error is answered.

    grpc-python's asyncio client reports INTERNAL ("Failed execute_batch") instead of
    the server's status when the call ends while it is still writing (grpc/grpc#36066),
    so a refused upload would lose its QUOTA_EXCEEDED or ARTIFACT_TOO_LARGE. Bounded in
    bytes and time; memory stays at one message. With `idle_seconds`, a client that
    sends nothing for that long (one that waits for the answer to a declared size
    before sending data) gets the answer then.
    """
    received = 0
    messages = requests.__aiter__()
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while True:
                message = await asyncio.wait_for(messages.__anext__(), idle_seconds)
                received += len(message.chunk) if message.WhichOneof("part") == "chunk" else message.ByteSize()
                if received > limit_bytes:
                    return
    except Exception:  # noqa: BLE001 - the end, a timeout, or a broken stream: nothing left to drain
        return


class _RefusedBeforeData(Exception):
    """A declared size was refused before any data was read."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _size_mismatch(declared: int, received: int, ended: bool) -> ArtifactInvalidError:
    sent = f"the upload ended after {received}" if ended else "more were sent"
    return ArtifactInvalidError(f"size_bytes declared {declared} bytes, but {sent}; nothing was stored", field="size_bytes")


async def _chunks(
    requests: AsyncIterator[artifact_pb2.UploadArtifactRequest], context: grpc.aio.ServicerContext, declared: int = 0
) -> AsyncIterator[bytes]:
    """The data of the messages after the first; each must be a chunk of at most 1 MiB.

    With a declared size (`size_bytes` > 0), the data must be exactly that long: a
    stream that ends short (a client that cancelled between two messages ends it too)
    or runs long is INVALID_ARGUMENT and nothing is stored. Without one, a cancel and a
    finished upload look the same until the call's cancellation follows within a
    moment, so the upload waits that moment before it is committed.
    """
    received = 0
    async for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise ArtifactInvalidError("only the first message may carry the artifact", field="artifact")
        chunk = message.chunk  # one copy: every access to a bytes field makes a new one
        if len(chunk) > CHUNK_BYTES:
            raise ArtifactInvalidError(f"chunks must be at most {CHUNK_BYTES} bytes", field="chunk")
        received += len(chunk)
        if declared and received > declared:
            raise _size_mismatch(declared, received, ended=False)
        yield chunk
    if declared:
        if received != declared:
            raise _size_mismatch(declared, received, ended=True)
        return
    # The call's cancellation follows a cancel's end of stream within a moment; wait
    # that moment (_CANCEL_GRACE_SECONDS, which every undeclared upload pays once) before committing.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CANCEL_GRACE_SECONDS
    while not context.cancelled() and loop.time() < deadline:
        await asyncio.sleep(0.002)
    if context.cancelled():
        raise asyncio.CancelledError("the client cancelled the upload")


class ArtifactService(artifact_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, library: ArtifactLibrary) -> None:
        self._library = library

    def _tenant(self, tenant: str) -> str:
        """The caller's tenant; `tenant` is only an operator's override (server/identity/caller.py)."""
        return caller.tenant_for(tenant)

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[artifact_pb2.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> artifact_pb2.UploadArtifactResponse:
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            raise ArtifactInvalidError("empty upload: no artifact was sent", field="artifact") from None
        try:
            return await self._upload(first, requests, context)
        except _RefusedBeforeData as refused:
            await _drain(requests, self._library.max_bytes + CHUNK_BYTES, idle_seconds=_IDLE_DRAIN_SECONDS)
            raise refused.error from None
        except ServiceError:
            await _drain(requests, self._library.max_bytes + CHUNK_BYTES)
            raise

    async def _upload(
        self,
        first: artifact_pb2.UploadArtifactRequest,
        requests: AsyncIterator[artifact_pb2.UploadArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> artifact_pb2.UploadArtifactResponse:
        if first.WhichOneof("part") != "artifact":
            raise ArtifactInvalidError("the first UploadArtifactRequest must carry the artifact", field="artifact")
        art = first.artifact
        name = artifact_id_from_name(art.name)
        tenant = self._tenant(first.tenant)  # another tenant's: PERMISSION_DENIED before any data
        type_ = _PROTO_TO_TYPE.get(art.type)
        if type_ is None:
            raise ArtifactInvalidError(f"unknown artifact type {art.type}", field="artifact.type")
        metadata = json_format.MessageToDict(art.metadata) if art.HasField("metadata") else {}
        if first.size_bytes < 0:
            raise ArtifactInvalidError("size_bytes must not be negative", field="size_bytes")
        # Everything but the data is checked before any data arrives (a declared size
        # too); the data then streams to storage (server memory: one chunk per upload,
        # within the budget).
        draft = self._library.draft(tenant, name, type_, art.description, metadata)
        if first.size_bytes:
            try:
                await self._library.check_declared_size(tenant, draft, first.size_bytes)
            except ServiceError as exc:
                raise _RefusedBeforeData(exc) from None
        record = await self._library.save_stream(tenant, draft, _chunks(requests, context, first.size_bytes))
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


def register(server: grpc.aio.Server, library: ArtifactLibrary) -> str:
    from server.registration import register_servicer

    return register_servicer(
        server,
        artifact_pb2_grpc.add_ArtifactServiceServicer_to_server,
        ArtifactService(library),
    )
