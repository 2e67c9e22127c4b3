"""Liveness, readiness (broker, InfluxDB, registry) and Prometheus metrics; no token needed."""

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import State

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    operation_id="health",
    summary="The process answers and its background tasks run",
    responses={503: {"description": "a background task has stopped; the body says which"}},
)
async def healthz(request: Request) -> JSONResponse:
    service = getattr(request.app.state, "service", None)
    problem = service.problem() if service is not None else "starting"
    if problem is not None:
        return JSONResponse({"status": "failing", "problem": problem}, 503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    operation_id="ready",
    summary="Broker, InfluxDB and registry reachable",
    responses={503: {"description": "something the API needs is away; the body says what"}},
)
async def readyz(state: State) -> JSONResponse:
    checks: dict[str, Any] = {"broker": state.broker.connected.is_set(), "influxdb": await state.influx.ping()}
    try:
        async with state.registry.session() as s:
            await s.execute(text("SELECT 1"))
        checks["registry"] = True
    except (SQLAlchemyError, OSError):
        checks["registry"] = False
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)


@router.get("/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: State) -> Response:
    state.metrics.connected.set(1 if state.broker.connected.is_set() else 0)
    return Response(generate_latest(state.metrics.registry), media_type="text/plain; version=0.0.4")
