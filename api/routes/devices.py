"""Devices: registration with per-device broker credentials, listing with status, rotation,
disabling (kicks the live connection), deletion, and HTTP ingest through the broker."""

import dataclasses
import json
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api import device_access
from api.deps import Caller, DeviceOwnerCaller, State
from api.errors import ApiError
from api.models import (
    ERRORS,
    Credentials,
    DeviceCreated,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    Page,
    ReadingsIn,
    ReadingsResult,
)
from api.mqtt import DynsecError
from api.state import ApiState
from devices.catalog import CATALOG
from devices.ids import Id
from devices.topics import DeviceTopic, command_topic, device_root
from devices.types import Channel, DeviceType
from ingest.admission import Refused
from store.devices import DeviceConflictError, DevicePlaceError, DeviceRecord
from store.influx import quote_literal
from store.series import measurement
from store.tokens import Principal, Role

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERRORS)
LAST_SEEN_WINDOW = "7d"


def _check_owner(p: Principal, d: DeviceRecord) -> None:
    if p.role is Role.VENDOR and d.vendor != p.vendor:
        raise ApiError(404, f"no device {d.id!r}")  # another vendor's device does not exist for you
    if p.role is Role.GRID_WORKER and d.grid not in p.grids:
        raise ApiError(404, f"no device {d.id!r}")


async def visible_device(state: ApiState, p: Principal, site: str, device_id: str) -> DeviceRecord:
    found = await state.devices.get(site, device_id)
    if found is None:
        raise ApiError(404, f"no device {device_id!r} at {site!r}")
    _check_owner(p, found)
    return found


async def _last_seen(state: ApiState, records: list[DeviceRecord]) -> dict[tuple[str, str], int]:
    """Each device's newest stored telemetry time, read for this page's devices only."""
    out: dict[tuple[str, str], int] = {}
    by_site: dict[str, list[DeviceRecord]] = {}
    for r in records:
        by_site.setdefault(r.site, []).append(r)
    for site, recs in by_site.items():
        names = sorted({measurement(r.type, Channel.TELEMETRY) for r in recs})
        ids = "|".join(sorted(r.id for r in recs))  # ids are [a-z0-9_-]: nothing to escape in a regex
        q = (
            f'SELECT last("seq") FROM /^({"|".join(names)})$/ WHERE "site" = {quote_literal(site)} '
            f'AND "device_id" =~ /^({ids})$/ AND time > now() - {LAST_SEEN_WINDOW} GROUP BY "device_id"'
        )
        for series in (await state.influx.query(q))[0]:
            key = (site, series.tags.get("device_id", ""))
            out[key] = max(out.get(key, 0), int(series.values[0][0]))
    return out


def _out(state: ApiState, r: DeviceRecord, seen: dict[tuple[str, str], int], now_ms: int) -> DeviceOut:
    last = seen.get((r.site, r.id))
    status: Literal["online", "offline", "never_seen", "disabled"]
    if not r.enabled:
        status = "disabled"
    elif last is None:
        status = "never_seen"
    else:
        fresh = now_ms - last <= r.interval_s * 1000 * state.settings.api_device_online_s
        status = "online" if fresh else "offline"
    record = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "username"}
    return DeviceOut(**record, mqtt_username=r.username, status=status, last_seen_ms=last)


def _credentials(r: DeviceRecord, password: str) -> Credentials:
    user = device_access.username(r.site, r.id)
    return Credentials(
        username=user,
        client_id=user,
        password=password,
        publish_under=device_root(r.site, r.type, r.id),
        subscribe=command_topic(r.site, r.type, r.id),
    )


@router.post(
    "",
    status_code=201,
    operation_id="registerDevice",
    summary="Register a device and create its broker credentials (the password is shown once)",
    responses={409: {"description": "the device exists"}, 422: {"description": "bad body or unknown place"}},
)
async def register(body: DeviceIn, state: State, caller: DeviceOwnerCaller) -> DeviceCreated:
    vendor = caller.vendor if caller.role is Role.VENDOR else body.vendor
    if caller.role is Role.VENDOR and body.vendor not in (None, caller.vendor):
        raise ApiError(403, "a vendor registers devices as itself", code="forbidden")
    interval = body.interval_s or CATALOG[body.type].interval_s
    try:
        record = await state.devices.register(
            body.site, body.id, body.type, building=body.building, unit=body.unit, floor=body.floor, zone=body.zone,
            interval_s=interval, vendor=vendor, label=body.label, username=device_access.username(body.site, body.id),
        )  # fmt: skip
    except DeviceConflictError as exc:
        raise ApiError(409, str(exc)) from exc
    except DevicePlaceError as exc:
        raise ApiError(422, str(exc), code="unknown_place") from exc
    try:
        password = await device_access.provision(state.broker, body.site, body.type, body.id)
    except BaseException:
        await state.devices.delete(body.site, body.id)  # no half-registered device
        raise
    return DeviceCreated(device=_out(state, record, {}, 0), credentials=_credentials(record, password))


@router.get("", operation_id="listDevices", summary="Devices you may see, with status and last-seen time")
async def list_devices(
    state: State,
    caller: Caller,
    site: Id | None = None,
    type: DeviceType | None = None,
    building: Id | None = None,
    vendor: Id | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page[DeviceOut]:
    if caller.role is Role.VENDOR:
        if vendor not in (None, caller.vendor):
            raise ApiError(403, "a vendor lists its own devices only", code="forbidden")
        vendor = caller.vendor
    grids = None if caller.role is not Role.GRID_WORKER else caller.grids
    everything = await state.devices.find(site=site, device_type=type, vendor=vendor, building=building, grids=grids)
    page = everything[offset : offset + limit]
    seen = await _last_seen(state, page) if page else {}
    now = int(time.time() * 1000)
    return Page[DeviceOut](
        items=[_out(state, r, seen, now) for r in page], total=len(everything), limit=limit, offset=offset
    )


@router.get("/{site}/{device_id}", operation_id="getDevice", summary="One device, with status")
async def get_device(site: Id, device_id: Id, state: State, caller: Caller) -> DeviceOut:
    record = await visible_device(state, caller, site, device_id)
    return _out(state, record, await _last_seen(state, [record]), int(time.time() * 1000))


@router.post(
    "/{site}/{device_id}/credentials",
    status_code=201,
    operation_id="rotateCredentials",
    summary="A new broker password: the old one stops working and the device's live connection is closed at "
    "once (it reconnects with the new one)",
)
async def rotate(site: Id, device_id: Id, state: State, caller: DeviceOwnerCaller) -> Credentials:
    record = await visible_device(state, caller, site, device_id)
    try:
        password = await device_access.rotate(state.broker, site, device_id)
    except DynsecError as exc:
        if "not found" not in exc.error.lower():
            raise
        password = await device_access.provision(state.broker, site, record.type, device_id)  # none yet: make one
    await state.devices.set_credentials(site, device_id, device_access.username(site, device_id), rotated=True)
    return _credentials(record, password)


@router.patch("/{site}/{device_id}", operation_id="updateDevice", summary="Disable (kicks it) or enable a device")
async def patch(site: Id, device_id: Id, body: DevicePatch, state: State, caller: DeviceOwnerCaller) -> DeviceOut:
    record = await visible_device(state, caller, site, device_id)
    if record.username is not None:
        await device_access.set_enabled(state.broker, site, device_id, body.enabled)
    await state.devices.set_enabled(site, device_id, body.enabled)
    return await get_device(site, device_id, state, caller)


@router.delete(
    "/{site}/{device_id}",
    status_code=204,
    operation_id="deleteDevice",
    summary="Delete a device and its broker client (kicks it); its stored readings stay",
)
async def delete(site: Id, device_id: Id, state: State, caller: DeviceOwnerCaller) -> Response:
    await visible_device(state, caller, site, device_id)
    await device_access.remove(state.broker, site, device_id)
    await state.devices.delete(site, device_id)
    return Response(status_code=204)


@router.post(
    "/{site}/{device_id}/readings",
    status_code=202,
    operation_id="postReadings",
    summary="HTTP ingest for devices without MQTT: each reading judged exactly as ingest judges it, the "
    "admitted ones published on the device's topic (acknowledged by the broker before this answers)",
    responses={422: {"description": "every reading was rejected; detail lists each with ingest's reason"}},
)
async def post_readings(
    site: Id, device_id: Id, body: ReadingsIn, state: State, caller: DeviceOwnerCaller
) -> ReadingsResult:
    record = await visible_device(state, caller, site, device_id)
    topic = DeviceTopic(site, record.type, device_id, Channel(body.channel))
    admission = await state.admission.get()
    now_ms = int(time.time() * 1000)
    accepted, rejected, admitted = 0, [], []
    for i, reading in enumerate(body.readings):
        # As a device would send it (NaN and Infinity included: ingest refuses them as schema).
        payload = json.dumps(reading, ensure_ascii=False).encode()
        verdict = admission.judge_device(topic, record, payload, now_ms)
        if isinstance(verdict, Refused):
            rejected.append({"index": i, "reason": verdict.reason, "detail": verdict.detail})
        else:
            admitted.append(payload)
    for payload in admitted:
        await state.broker.publish(str(topic), payload)
        accepted += 1
    result = ReadingsResult.model_validate({"accepted": accepted, "rejected": rejected})
    if not accepted:
        raise ApiError(422, "no reading was accepted", code="all_rejected", detail=result.model_dump()["rejected"])
    return result
