"""A tiny asyncio HTTP endpoint for /metrics and /healthz, for services that have no web framework."""

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Self

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST_BYTES = 8192


class HealthServer:
    """``GET /metrics`` (Prometheus text) and ``GET /healthz`` (200 ok / 503 with the reason)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, check: Callable[[], str | None]) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.check = check
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        parts = head[:MAX_REQUEST_BYTES].split(b" ", 2)
        path = parts[1].decode("latin-1") if len(parts) > 1 else ""
        if parts[0] != b"GET":
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        elif path == "/metrics":
            status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        elif path == "/healthz":
            problem = self.check()
            status = "200 OK" if problem is None else "503 Service Unavailable"
            ctype, body = "text/plain", (problem or "ok").encode() + b"\n"
        else:
            status, ctype, body = "404 Not Found", "text/plain", b"/metrics or /healthz\n"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
