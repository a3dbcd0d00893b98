"""ListDependencies pages through a real server (configured packages; no install needed)."""

from __future__ import annotations

import grpc
import pytest

from codemode_protos.v1 import dependency_pb2, session_pb2
from tests.deps.helpers import deps_stub
from tests.helpers.sessions import create_ready_session
from tests.server.helpers import connect, error_info

PACKAGES = [f"cm-pkg-{i}" for i in range(7)]


def _request(**fields: object) -> dependency_pb2.ListDependenciesRequest:
    return dependency_pb2.ListDependenciesRequest(**fields)


async def test_list_dependencies_pages_with_tokens_bound_to_the_session(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    stub = deps_stub(client)
    async with client.channel:
        config = session_pb2.SessionConfig(deps=PACKAGES, allow_runtime_deps=True)
        create = session_pb2.CreateSessionRequest(session=session_pb2.Session(config=config))
        name = (await create_ready_session(client.sessions, create)).name
        other = (await create_ready_session(client.sessions, create)).name

        everything = await stub.ListDependencies(_request(session=name), timeout=10)
        assert list(everything.dependencies) == PACKAGES and not everything.next_page_token

        seen, token, pages = [], "", 0
        while True:
            page = await stub.ListDependencies(_request(session=name, page_size=3, page_token=token), timeout=10)
            assert len(page.dependencies) <= 3
            seen += page.dependencies
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == PACKAGES and pages == 3

        # A package removed between pages does not make the next page skip one.
        first = await stub.ListDependencies(_request(session=name, page_size=3), timeout=10)
        await stub.RemoveDependency(dependency_pb2.RemoveDependencyRequest(session=name, package="cm-pkg-0"), timeout=10)
        rest = await stub.ListDependencies(_request(session=name, page_size=10, page_token=first.next_page_token),
                                           timeout=10)
        assert list(rest.dependencies) == PACKAGES[3:]

        for bad in (
            _request(session=name, page_size=-1),
            _request(session=name, page_token="not-a-token"),
            _request(session=other, page_token=first.next_page_token),  # issued for another session
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListDependencies(bad, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(refused.value).metadata["field"] in ("page_size", "page_token")
