"""An HTTP proxy in front of influxd that misbehaves on request: the faults influxd rarely produces."""

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

# A fault decides, per /write body, what to answer instead of forwarding: (status, headers, body),
# or None to forward. "hang" holds the request open.
Fault = Callable[[bytes], tuple[int, dict[str, str], bytes] | str | None]


@dataclass
class FaultProxy:
    upstream: str
    fault: Fault | None = None
    port: int = 0
    writes: list[tuple[int, int]] = field(default_factory=list)  # (status answered, body bytes)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    async def _shutdown(self) -> None:
        """Close the server and end the requests it holds (the hanging ones too)."""
        assert self._server is not None
        self._server.close()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        decision = self.fault(body) if (self.fault and target.startswith("/write")) else None
        if decision == "hang":
            await asyncio.sleep(3600)
            return
        if isinstance(decision, tuple):
            status, extra, answer = decision
        else:
            async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
                fwd = {k: v for k, v in headers.items() if k in ("content-type", "content-encoding")}
                response = await client.request(method, target, content=body, headers=fwd)
            status, extra, answer = response.status_code, {}, response.content
        if target.startswith("/write"):
            self.writes.append((status, len(body)))
        head_out = f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\nConnection: close\r\n"
        head_out += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        writer.write(head_out.encode() + b"\r\n" + answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
