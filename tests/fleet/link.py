"""A TCP link on loopback that a test can cut silently, as a shop's internet dies.

Cutting stops forwarding in both directions but keeps every socket open, so
neither end sees a FIN or RST: the broker only notices through the MQTT
keepalive, exactly as with a dead DSL line. New connections while cut are
accepted and left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib

from fleet.localcluster import free_port


class CuttableLink:
    """Forwards ``127.0.0.1:{port}`` to ``target_port`` until ``cut()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def cut(self) -> None:
        self.cut_event.set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self.cut_event.is_set():
                    continue  # swallowed: the line is dead, nobody is told
                writer.write(data)
                await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.cut_event.is_set():
            return  # accepted, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
