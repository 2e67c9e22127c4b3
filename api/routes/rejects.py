"""A device's dead letters, for its vendor and the engineers: what ingest refused of it, per reason,
the last messages kept whole, and the open ``invalid_payloads`` alert when there is one."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Caller, State
from api.models import ERRORS
from api.routes.devices import visible_device
from api.state import ApiState
from devices.ids import Id
from store.alerts import AlertView
from store.influx import InfluxError, quote_literal

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERRORS)
RECENT = 20
# Measurements and retention policy as ingest writes them (ingest/rejects.py).
COUNTS = '"rejects"."ingest_reject_counts"'
KEPT = '"rejects"."ingest_rejects"'


class DeadLetter(BaseModel):
    at_ms: int
    reason: str
    detail: str
    topic: str
    payload_bytes: int
    payload: str
    payload_encoding: str


class DeviceRejects(BaseModel):
    site: str
    device_id: str
    hours: int
    total: int
    by_reason: dict[str, int]
    recent: list[DeadLetter]
    alert: AlertView | None


async def _rows(state: ApiState, q: str) -> list[dict[str, Any]]:
    try:
        result = (await state.influx.query(q))[0]
    except InfluxError as exc:
        if "retention policy not found" in str(exc):
            return []  # no ingest has made the policy yet: nothing was ever rejected
        raise
    return [{**s.tags, **row} for s in result for row in s.rows()]


@router.get(
    "/{site}/{device_id}/rejects",
    operation_id="getDeviceRejects",
    summary="What ingest rejected of this device: counts per reason, the last messages kept whole, the open "
    "invalid_payloads alert",
)
async def device_rejects(
    site: Id,
    device_id: Id,
    state: State,
    caller: Caller,
    hours: Annotated[int, Query(ge=1, le=24 * 30)] = 24,
) -> DeviceRejects:
    await visible_device(state, caller, site, device_id)
    where = f'"site" = {quote_literal(site)} AND "device_id" = {quote_literal(device_id)} AND time > now() - {hours}h'
    counts = await _rows(state, f'SELECT sum("count") FROM {COUNTS} WHERE {where} GROUP BY "reason"')
    by_reason = {str(r["reason"]): int(r["sum"]) for r in counts if r.get("sum")}
    kept = await _rows(
        state,
        f'SELECT "reason", "detail", "topic", "payload_bytes", "payload", "payload_encoding" FROM {KEPT} '
        f"WHERE {where} ORDER BY time DESC LIMIT {RECENT}",
    )
    recent = [
        DeadLetter(
            at_ms=int(r["time"]), reason=str(r["reason"]), detail=str(r["detail"] or ""), topic=str(r["topic"] or ""),
            payload_bytes=int(r["payload_bytes"] or 0), payload=str(r["payload"] or ""),
            payload_encoding=str(r["payload_encoding"] or "utf-8"),
        )
        for r in kept
    ]  # fmt: skip
    found, _ = await state.alerts.search(
        site=site, rule="invalid_payloads", subject=device_id, states=("open", "acknowledged"), limit=1
    )
    return DeviceRejects(
        site=site, device_id=device_id, hours=hours, total=sum(by_reason.values()), by_reason=by_reason,
        recent=recent, alert=found[0] if found else None,
    )  # fmt: skip
