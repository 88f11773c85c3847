"""A TCP relay in front of Redis that can freeze chosen connections: bytes stop flowing both ways while both sockets
stay open, as when a NAT or firewall flow silently stops forwarding. Nothing is closed, so no client notices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit


@dataclass
class Connection:
    """One relayed client connection."""

    subscriber: bool = False
    """The client sent SUBSCRIBE on it (a pub/sub connection)."""
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flowing.set()


class Relay:
    """Relays ``127.0.0.1:<port>`` to the Redis at ``target_url``; use as ``async with Relay(url) as relay``."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.database = parts.path or "/0"
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.database}"

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            connection.flowing.set()
            for writer in connection.writers:
                writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def freeze(self, which: Callable[[Connection], bool]) -> int:
        """Stop the flow on every connection ``which`` selects; returns how many were frozen."""
        frozen = [c for c in self.connections if which(c)]
        for connection in frozen:
            connection.flowing.clear()
        return len(frozen)

    def thaw(self) -> None:
        """Let everything flow again (what was held back is delivered, in order)."""
        for connection in self.connections:
            connection.flowing.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        connection = Connection(writers=[client_writer, server_writer])
        self.connections.append(connection)
        for reader, writer, upstream in (
            (client_reader, server_writer, True),
            (server_reader, client_writer, False),
        ):
            task = asyncio.create_task(self._pump(connection, reader, writer, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, connection: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if upstream and b"SUBSCRIBE" in data.upper():
                    connection.subscriber = True
                await connection.flowing.wait()  # frozen: hold the bytes, read no more, close nothing
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()
