"""The FastAPI application: ``create_app(settings)``; the lifespan owns every client."""

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.routes import alerts, devices, estate, health, page, rejects, telemetry, tokens
from api.settings import ApiSettings
from api.state import ApiService

log = logging.getLogger("estatewatch.api.access")
PREFIX = "/api/v1"


class StrictJSONResponse(JSONResponse):
    """JSON with NaN and infinity refused at the source (they are not JSON): a reading can't carry
    one (payload validation), so one here is a bug, and a 500 says so instead of invalid JSON."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class AccessLog:
    """Request metrics and one log line per request (method, route, status, time: no headers, no
    query values, so tokens and plates stay out of logs). Plain ASGI: Starlette's BaseHTTPMiddleware
    costs a task group and a memory stream per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            request = Request(scope)
            name = _route_name(request)
            state = getattr(request.app.state, "api", None)
            if state is not None:
                state.metrics.requests.labels(name, str(status)).inc()
                state.metrics.seconds.labels(name).observe(elapsed)
            log.info("%s %s %d %.1f ms", scope["method"], name, status, elapsed * 1000)


def _route_name(request: Request) -> str:
    """The path with its parameters as {names}: one metric series per route, not per device."""
    if request.scope.get("route") is None:
        return "unmatched"  # a scanner's made-up paths must not each become a series
    path = request.url.path
    for key, value in request.path_params.items():
        path = path.replace(f"/{value}", f"/{{{key}}}", 1)
    return path


async def _when_stopped(service: ApiService, on_failure: Callable[[], None] | None) -> None:
    await service.wait()
    if service.failed is not None and on_failure is not None:
        on_failure()


def create_app(settings: ApiSettings, on_failure: Callable[[], None] | None = None) -> FastAPI:
    """``on_failure``: called when one of the service's tasks has died (the CLI stops uvicorn)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ApiService(settings) as service:
            assert service.state is not None
            app.state.api = service.state
            app.state.service = service
            # What start-up built lives as long as the process: keep the collector's full passes from
            # walking it again and again (each one a pause for every request in flight).
            gc.collect()
            gc.freeze()
            watcher = asyncio.create_task(_when_stopped(service, on_failure), name="api:watch")
            try:
                yield
            finally:
                watcher.cancel()

    app = FastAPI(
        title="EstateWatch API",
        version="1.0",
        description="Devices and their broker credentials, the estate, telemetry, alerts. "
        "Every call but /healthz, /readyz, /metrics and the page needs 'Authorization: Bearer <token>'.",
        lifespan=lifespan,
        default_response_class=StrictJSONResponse,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    errors.install(app)
    for module in (devices, rejects, estate, telemetry, alerts, tokens):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(health.router)
    app.include_router(page.router)

    app.add_middleware(AccessLog)
    return app
