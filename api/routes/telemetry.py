"""Telemetry: the latest reading per device, and time ranges aggregated per interval, per device,
building or type, as JSON or CSV. Every name comes from the device vocabulary; bad parameters are
422s (see api/queries.py)."""

import csv
import io
import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from api.deps import State, TelemetryCaller
from api.errors import ApiError
from api.last_values import LastValue
from api.models import ERRORS
from api.queries import Agg, Filter, QueryError, aggregate, check_field, interval_ms, latest, measurement_for
from api.state import ApiState
from devices.ids import Id
from devices.types import Channel, DeviceType
from store.devices import DeviceRecord
from store.series import TAG_FIELDS, TAG_NAMES
from store.tokens import Principal, Role

router = APIRouter(prefix="/telemetry", tags=["telemetry"], responses=ERRORS)
MAX_RANGE_MS = 366 * 86_400_000
FieldName = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
DEVICE_TAGS = {"site", "device_type", "device_id", "building", "unit", "zone", "grid", *TAG_NAMES.values()}


class Reading(BaseModel):
    device_id: str
    ts: int
    tags: dict[str, str]
    fields: dict[str, Any]


class LatestOut(BaseModel):
    type: DeviceType
    channel: Literal["telemetry", "event"]
    items: list[Reading]
    total: int
    limit: int
    offset: int


class SeriesOut(BaseModel):
    group: dict[str, str]
    points: list[tuple[int, float | int | str | bool | None]]


class RangeOut(BaseModel):
    measurement: str
    field: str
    agg: str
    interval_ms: int
    start_ms: int
    end_ms: int
    series: list[SeriesOut]


async def _scope(
    state: ApiState, p: Principal, site: str, device_type: DeviceType, device_id: str | None, building: str | None
) -> Filter:
    """What the caller may read: engineers and admins anything; vendors their devices; grid workers
    their grids' devices and buildings."""
    if p.role in (Role.ADMIN, Role.ENGINEER):
        return Filter(site, (device_id,) if device_id else (), building)
    if device_id is None and (p.role is Role.VENDOR or building is None):
        raise ApiError(403, "name a device_id you may read (or, for grid workers, a building)", code="forbidden")
    mine = await state.devices.find(
        site=site, device_type=device_type, building=building, ids=[device_id] if device_id else None,
        vendor=p.vendor if p.role is Role.VENDOR else None, grids=p.grids if p.role is Role.GRID_WORKER else None,
    )  # fmt: skip
    if not mine:
        raise ApiError(404, "no such device or building among those you may read")
    if p.role is Role.GRID_WORKER and building is not None and device_id is None:
        return Filter(site, (), building)
    return Filter(site, tuple(sorted(d.id for d in mine)), building)


def _bad(exc: QueryError) -> ApiError:
    return ApiError(422, str(exc), code="bad_query")


READING_TAGS = {TAG_NAMES.get(t, t) for t in TAG_FIELDS}


def _device_tags(d: DeviceRecord) -> dict[str, str]:
    pairs = (("site", d.site), ("device_type", d.type.value), ("device_id", d.id), ("building", d.building),
             ("unit", d.unit), ("zone", d.zone), ("grid", d.grid))  # fmt: skip
    return {k: v for k, v in pairs if v}


def _split(row: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """A stored row's reading tags (a charger's port) and fields."""
    tags = {k: str(v) for k, v in row.items() if k in READING_TAGS and v is not None}
    fields = {k: v for k, v in row.items() if k not in DEVICE_TAGS and k not in tags and k != "time" and v is not None}
    return tags, fields


async def _latest_from_memory(
    state: ApiState, name: str, site: str, page: list[DeviceRecord], since: int
) -> list[dict[str, Any]]:
    lvc = state.last_values
    keys = [(site, d.id) for d in page]
    if lvc.unknown(keys, since):
        async with state.fill_lock:  # one look-up at a time, and for every device of the type at once:
            if lvc.unknown(keys, since):  # a burst of pages then makes one query, not one each
                of_type = [(site, d.id) for d in await state.devices.find(site=site, device_type=page[0].type)]
                window_ms = int(time.time() * 1000) - since
                for series in (await state.influx.query(latest(name, Filter(site), window_ms)))[0]:
                    for row in series.rows():
                        tags, fields = _split(row)
                        key = (site, series.tags.get("device_id", ""))
                        lvc.offer(key, LastValue(int(row["time"]), tags, fields))
                lvc.learned(of_type, since)
    items = []
    for d in page:
        value = lvc.get((site, d.id))
        if value is not None and value.ts >= since:
            items.append({"device_id": d.id, "ts": value.ts, "tags": _device_tags(d) | value.tags,
                          "fields": value.fields})  # fmt: skip
    return items


async def _latest_from_influx(
    state: ApiState, name: str, site: str, page: list[DeviceRecord], building: str | None, within_ms: int
) -> list[dict[str, Any]]:
    if not page:
        return []
    by_id = {d.id: d for d in page}
    items = []
    result = (await state.influx.query(latest(name, Filter(site, tuple(by_id), building), within_ms)))[0]
    for series in result:
        device = by_id.get(series.tags.get("device_id", ""))
        for row in series.rows():
            if device is not None:
                tags, fields = _split(row)
                items.append({"device_id": device.id, "ts": int(row["time"]), "tags": _device_tags(device) | tags,
                              "fields": fields})  # fmt: skip
    return items


@router.get(
    "/latest", operation_id="latestReadings", summary="The newest reading of each device", response_model=LatestOut
)
async def latest_readings(
    state: State,
    caller: TelemetryCaller,
    site: Id,
    type: DeviceType,
    channel: Literal["telemetry", "event"] = "telemetry",
    device_id: Id | None = None,
    building: Id | None = None,
    within: Annotated[str, Query(pattern=r"^[1-9][0-9]{0,4}[smhd]$")] = "1d",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    scope = await _scope(state, caller, site, type, device_id, building)
    try:
        name = measurement_for(type, Channel(channel))
        within_ms = interval_ms(within)
    except QueryError as exc:
        raise _bad(exc) from exc
    # Paged by the registry's devices; then each device's newest reading.
    devices = await state.devices.find(
        site=site, device_type=type, building=building, ids=list(scope.device_ids) if scope.device_ids else None
    )
    page = devices[offset : offset + limit]
    since = int(time.time() * 1000) - within_ms
    if channel == "telemetry":
        items = await _latest_from_memory(state, name, site, page, since)
    else:  # events are rarer and wanted less often: InfluxDB answers them
        items = await _latest_from_influx(state, name, site, page, building, within_ms)
    total = len(devices)
    items.sort(key=lambda r: str(r["device_id"]))
    # Built as plain JSON: the shape is LatestOut's (the OpenAPI document and the schema tests hold it
    # to that), without validating what InfluxDB just gave back, which was the larger part of the time.
    body = {"type": type.value, "channel": channel, "items": items, "total": total, "limit": limit, "offset": offset}
    return Response(json.dumps(body, ensure_ascii=False, allow_nan=False), media_type="application/json")


@router.get(
    "/range",
    operation_id="telemetryRange",
    summary="One field aggregated per interval, per device, per building or for the whole type (JSON or CSV)",
    responses={200: {"content": {"text/csv": {}}}},
)
async def telemetry_range(
    state: State,
    caller: TelemetryCaller,
    site: Id,
    type: DeviceType,
    field: FieldName,
    agg: Agg = "mean",
    interval: Annotated[str, Query(pattern=r"^[1-9][0-9]{0,4}[smhd]$")] = "5m",
    channel: Literal["telemetry", "event"] = "telemetry",
    start_ms: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    end_ms: Annotated[int | None, Query(ge=0, le=10**14)] = None,
    device_id: Id | None = None,
    building: Id | None = None,
    group_by: Literal["device", "building", "none"] = "none",
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=500, description="series (groups) per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    end = end_ms if end_ms is not None else int(time.time() * 1000)
    start = start_ms if start_ms is not None else end - 86_400_000
    try:
        name = measurement_for(type, Channel(channel))
        check_field(name, field, agg)
        every = interval_ms(interval)
        if start >= end:
            raise QueryError("start_ms must be before end_ms")
        if end - start > MAX_RANGE_MS:
            raise QueryError("at most 366 days per request")
        if (end - start) // every > state.settings.api_max_points:
            raise QueryError(
                f"{(end - start) // every} intervals per series; at most {state.settings.api_max_points}: "
                "widen the interval or shorten the range"
            )
    except QueryError as exc:
        raise _bad(exc) from exc
    scope = await _scope(state, caller, site, type, device_id, building)
    q = aggregate(name, field, agg, scope, start, end, every, group_by, limit, offset)
    result = (await state.influx.query(q))[0]
    series = [SeriesOut(group=s.tags, points=[(int(v[0]), v[1]) for v in s.values]) for s in result]
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        keys = sorted({k for s in series for k in s.group})
        writer.writerow(["time_ms", *keys, f"{agg}_{field}"])
        for s in series:
            for t, v in s.points:
                writer.writerow([t, *(s.group.get(k, "") for k in keys), "" if v is None else v])
        filename = f"{name}-{field}-{agg}.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip
    return RangeOut(measurement=name, field=field, agg=agg, interval_ms=every, start_ms=start, end_ms=end,
                    series=series)  # fmt: skip
