"""A TCP proxy in front of the broker whose client-to-broker direction can be cut: the client's
PUBACKs then never arrive, while the broker's messages still do (a worker that stored a batch and
died before its acknowledgements left the host)."""

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    upstream_port: int
    port: int = 0
    forwarding_up: threading.Event = field(default_factory=threading.Event)
    dropped_bytes: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None

    def start(self) -> "TcpProxy":
        self.forwarding_up.set()
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        return self

    def url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.port}"

    def cut_up(self) -> None:
        """From now on, bytes from clients are read and dropped."""
        self.forwarding_up.clear()

    def restore_up(self) -> None:
        self.forwarding_up.set()

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:
            while data := await client_r.read(65536):
                if self.forwarding_up.is_set():
                    broker_w.write(data)
                    await broker_w.drain()
                else:
                    self.dropped_bytes += len(data)

        async def down() -> None:
            while data := await broker_r.read(65536):
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (client_w, broker_w):
            w.close()
