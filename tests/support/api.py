"""The API served for real inside the test (uvicorn on a free port), and tokens for every role."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings
from api.state import ApiState
from stack.procs import free_port
from store.registry.db import Registry
from store.tokens import Role, TokenStore
from tests.support.servers import Broker


def api_settings(broker: Broker, influx_url: str, db: str, registry_url: str, tmp: Path, **over: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "mqtt_url": broker.url("api"),
        "influx_url": influx_url,
        "influx_database": db,
        "db_url": registry_url,
        "run_dir": tmp / "run",
        "api_port": free_port(),
        "api_token_cache_s": 0,  # revocations take effect at once in tests
        **over,
    }
    return ApiSettings.model_validate(values)


@dataclass
class RunningApi:
    url: str
    app: FastAPI
    server: "asyncio.Task[None]"

    @property
    def state(self) -> ApiState:
        state: ApiState = self.app.state.api
        return state

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@asynccontextmanager
async def running_api(settings: ApiSettings, stop_on_failure: bool = False) -> AsyncIterator[RunningApi]:
    """``stop_on_failure``: a dead background task stops the server, as ``estatewatch api`` does."""
    server: uvicorn.Server | None = None

    def stop_serving() -> None:
        assert server is not None
        server.should_exit = True

    app = create_app(settings, on_failure=stop_serving if stop_on_failure else None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_config=None))

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot start: a test must only fail
            raise RuntimeError(f"the API did not start (uvicorn exit {exc.code}); see the log above") from None

    task = asyncio.create_task(serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.02)
        yield RunningApi(f"http://127.0.0.1:{settings.api_port}", app, task)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass(frozen=True)
class Tokens:
    admin: str
    engineer: str
    vendor_a: str
    vendor_b: str
    worker_g01: str
    worker_g02: str


async def make_tokens(registry_url: str) -> Tokens:
    async with Registry(registry_url) as reg:
        store = TokenStore(reg)
        made = [
            (await store.create(Role.ADMIN, "root"))[0],
            (await store.create(Role.ENGINEER, "eng"))[0],
            (await store.create(Role.VENDOR, "acme", vendor="acme"))[0],
            (await store.create(Role.VENDOR, "other", vendor="other"))[0],
            (await store.create(Role.GRID_WORKER, "wang", grids=["g01"]))[0],
            (await store.create(Role.GRID_WORKER, "li", grids=["g02"]))[0],
        ]
    return Tokens(*made)
