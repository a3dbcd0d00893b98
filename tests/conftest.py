"""Shared test plumbing: import paths, the CI skip-vs-fail rule, an in-process server."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (_ROOT, os.path.join(_ROOT, "clients", "python", "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402


def require(available: bool, what: str) -> None:
    """Skips locally but FAILS under CI=true, so CI can never go green by skipping."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def otel_metric_reader():  # type: ignore[no-untyped-def]
    """The process-wide MeterProvider (OTel allows setting it once), read in memory."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    assert metrics.get_meter_provider() is provider, "a MeterProvider was installed outside this fixture"
    return reader


@dataclasses.dataclass
class RunningServer:
    """An in-process `serve()`; `app` gives tests the session manager and pool counters."""

    address: str
    config: object
    app: object
    data_dir: str


@pytest.fixture
async def running_server() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Factory: `await running_server(warm_pool_size=0, ...)` starts a server on 127.0.0.1:0.

    Keyword arguments override ServerConfig fields (without api_token, principals_file or
    no_auth the server runs with no_auth=True); `host_call_handler` replaces the
    default skills/artifacts handler. Every server started is shut down
    (sandboxes included) and its data dir removed when the test ends.
    """
    import asyncio

    from server.app import serve
    from server.config import ServerConfig

    started: list[tuple[RunningServer, asyncio.Task]] = []

    async def start(host_call_handler: object = None, **overrides: object) -> RunningServer:
        # Short path: sandbox unix sockets must fit in sun_path (108 bytes).
        data_dir = tempfile.mkdtemp(prefix="cmt-")
        fields = {"listen": "127.0.0.1:0", "data_dir": data_dir, "warm_pool_size": 0, "shutdown_grace": 5.0}
        if not {"api_token", "principals_file", "no_auth"} & overrides.keys():
            # Unauthenticated unless the test configures auth: these tests are about other
            # things; tests/identity/ covers authentication, including the default.
            fields["no_auth"] = True
        fields.update(overrides)
        config = ServerConfig(**fields)  # type: ignore[arg-type]
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(serve(config, ready_callback=ready.set_result, host_call_handler=host_call_handler))  # type: ignore[arg-type]
        done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the start error
        app = ready.result()
        server = RunningServer(app.address, config, app, data_dir)
        started.append((server, task))
        return server

    yield start
    for server, task in started:
        server.app.request_stop()  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(task, timeout=60)
        finally:
            # A sandbox stop finishing in the background may still be removing its dir.
            for _ in range(50):
                shutil.rmtree(server.data_dir, ignore_errors=True)
                if not os.path.exists(server.data_dir):
                    break
                await asyncio.sleep(0.1)
