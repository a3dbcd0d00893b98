"""A unix-socket pass-through to the real Docker engine that a test can take down.

Stopping the machine's dockerd would break every other engineer's containers,
so "the engine goes away and comes back" is played by cutting this proxy:
the provider sees exactly what it sees when dockerd stops (connection refused,
event stream cut), while the engine behind it stays real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

ENGINE_SOCKET = "/var/run/docker.sock"


class EngineProxy:
    def __init__(self, path: str, engine_socket: str = ENGINE_SOCKET) -> None:
        self.path = path
        self._engine_socket = engine_socket
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def stop(self) -> None:
        """Refuses new connections and cuts the open ones, like a dead engine."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            engine_reader, engine_writer = await asyncio.open_unix_connection(self._engine_socket)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, engine_writer))
        try:
            await asyncio.gather(
                _pipe(client_reader, engine_writer), _pipe(engine_reader, client_writer)
            )
        finally:
            for writer in (client_writer, engine_writer):
                self._writers.discard(writer)
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
