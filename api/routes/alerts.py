"""Alerts: search, one alert with its evidence and audit trail, acknowledge / resolve / assign,
and a server-sent-events stream of changes, each limited to the caller's grids."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.auth import check_grid
from api.cache import list_affected_by
from api.deps import AlertsCaller, State
from api.errors import ApiError
from api.models import ERRORS, Assign, Note, Page
from api.state import ApiState
from devices.ids import Id
from store.alerts import AlertNotFoundError, AlertStateError, AlertView
from store.tokens import Principal, Role

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=ERRORS)
log = logging.getLogger("estatewatch.api.alerts")
KEEPALIVE_S = 15.0
RuleName = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# The ids are PostgreSQL SERIALs (int32): a larger one names no alert and, unchecked, failed as a 500
# there (SQLite took it); refused as the bad request it is.
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class AuditOut(BaseModel):
    at_ms: int
    actor: str
    action: str
    detail: dict[str, Any]


class AlertDetail(BaseModel):
    alert: AlertView
    audit: list[AuditOut]


def _visible(p: Principal, grid: str | None) -> bool:
    return p.role is not Role.GRID_WORKER or grid in p.grids


@router.get(
    "",
    operation_id="listAlerts",
    summary="Alerts, newest first, filtered; grid workers see their grids",
    response_model=Page[AlertView],
)
async def list_alerts(
    state: State,
    caller: AlertsCaller,
    site: Id | None = None,
    alert_state: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query(alias="state")] = None,
    rule: RuleName | None = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    grid: Id | None = None,
    building: Id | None = None,
    since_ms: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    until_ms: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    grids: list[str] | None = None
    if grid is not None:
        check_grid(caller, grid)
        grids = [grid]
    elif caller.role is Role.GRID_WORKER:
        grids = sorted(caller.grids)
    states = tuple(sorted(set(alert_state))) if alert_state else None
    key = (site, states, rule, severity, tuple(grids) if grids is not None else None, building, since_ms, until_ms,
           limit, offset)  # fmt: skip

    async def compute() -> bytes:
        found, total = await state.alerts.search(
            site=site, states=states, rule=rule, severity=severity, grids=grids, building=building,
            since_ms=since_ms, until_ms=until_ms, limit=limit, offset=offset,
        )  # fmt: skip
        page = Page[AlertView](items=[v for v in found], total=total, limit=limit, offset=offset)
        return page.model_dump_json().encode()

    return Response(await state.alert_lists.get_or_compute(key, compute), media_type="application/json")


async def _alert(state: ApiState, caller: Principal, alert_id: int) -> AlertDetail:
    """The alert if it exists and is in the caller's grids (the route admitted the role)."""
    try:
        view, audit = await state.alerts.get(alert_id)
    except AlertNotFoundError as exc:
        raise ApiError(404, f"no alert {alert_id}") from exc
    if not _visible(caller, view.grid):
        raise ApiError(404, f"no alert {alert_id}")  # outside your grids: as if it did not exist
    return AlertDetail(alert=view, audit=[AuditOut.model_validate(asdict(a)) for a in audit])


@router.get("/stream", operation_id="streamAlerts", summary="Server-sent events: every alert change you may see",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def stream(request: Request, state: State, caller: AlertsCaller, site: Id | None = None) -> StreamingResponse:

    async def events() -> AsyncIterator[bytes]:
        state.metrics.streams.inc()
        try:
            async with state.broker.alert_changes() as changes:
                yield b"retry: 3000\n: connected\n\n"
                while not await request.is_disconnected():
                    try:
                        doc = await asyncio.wait_for(changes.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if (site is None or doc.get("site") == site) and _visible(caller, doc.get("grid")):
                        data = json.dumps(doc, ensure_ascii=False, allow_nan=False)
                        yield f"id: {doc.get('id')}\nevent: alert\ndata: {data}\n\n".encode()
        finally:
            state.metrics.streams.dec()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/{alert_id}", operation_id="getAlert", summary="One alert with its evidence and audit trail")
async def get_alert(alert_id: AlertId, state: State, caller: AlertsCaller) -> AlertDetail:
    return await _alert(state, caller, alert_id)


def _announce(state: ApiState, view: AlertView, action: str) -> None:
    """This process's alert lists change at once; the copies (radios, apps, InfluxDB) were queued in the
    alert book with the action itself, and the rules service sends them, whenever the broker is there."""
    state.alert_lists.changed(list_affected_by({"action": action, **view.as_json()}))


async def _act(state: ApiState, caller: Principal, alert_id: int, action: str, **kw: Any) -> AlertDetail:
    await _alert(state, caller, alert_id)  # exists and visible
    try:
        if action == "acknowledged":
            view = await state.alerts.acknowledge(alert_id, caller.actor, kw.get("note"))
        elif action == "resolved":
            view = await state.alerts.resolve(alert_id, caller.actor, kw.get("note"))
        else:
            view = await state.alerts.assign(alert_id, kw.get("assignee"), caller.actor)
    except AlertStateError as exc:
        raise ApiError(409, str(exc), code="wrong_state") from exc
    _announce(state, view, action)
    return await _alert(state, caller, alert_id)


@router.post("/{alert_id}/acknowledge", operation_id="acknowledgeAlert", summary="I have seen it and I am on it",
             responses={409: {"description": "the alert is not open"}})
async def acknowledge(alert_id: AlertId, state: State, caller: AlertsCaller, body: Note | None = None) -> AlertDetail:
    return await _act(state, caller, alert_id, "acknowledged", note=body.note if body else None)


@router.post("/{alert_id}/resolve", operation_id="resolveAlert", summary="Resolve, with a note",
             responses={409: {"description": "the alert is already resolved"}})
async def resolve(alert_id: AlertId, state: State, caller: AlertsCaller, body: Note | None = None) -> AlertDetail:
    return await _act(state, caller, alert_id, "resolved", note=body.note if body else None)


@router.post("/{alert_id}/assign", operation_id="assignAlert", summary="Assign to a worker (or nobody)",
             responses={409: {"description": "the alert is resolved"}})
async def assign(alert_id: AlertId, body: Assign, state: State, caller: AlertsCaller) -> AlertDetail:
    return await _act(state, caller, alert_id, "assigned", assignee=body.assignee)
