"""Readings back out of InfluxDB, to rebuild the engine's state on start.

Rows are read by the same storage rules ingest writes by (``store.series``), turned back into payload
documents and validated with the device vocabulary, so the engine sees exactly what it would have
seen live. Pages by time in nanoseconds (ingest's timestamps carry the seq below the millisecond).
"""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from devices.catalog import CATALOG, PayloadError, parse_payload
from devices.payloads.common import Reading
from devices.types import Channel, DeviceType
from store.influx import Influx, quote_ident, quote_literal
from store.series import TAG_FIELDS, TAG_NAMES, field_kinds, measurement

PAGE = 20_000


@dataclass(frozen=True, slots=True)
class Stored:
    device_type: DeviceType
    device_id: str
    channel: Channel
    reading: Reading


def _models(device_type: DeviceType, channel: Channel) -> tuple[type[Reading], ...]:
    spec = CATALOG[device_type]
    return (spec.telemetry,) if channel is Channel.TELEMETRY else spec.event_models()


def _columns(device_type: DeviceType, channel: Channel) -> tuple[list[str], list[str]]:
    """(field names, tag names) to select for a measurement's payloads."""
    fields: dict[str, None] = {}
    tags: dict[str, None] = {"device_id": None}
    for model in _models(device_type, channel):
        for name, _ in field_kinds(model):
            if name in TAG_FIELDS:
                tags[TAG_NAMES.get(name, name)] = None
            else:
                fields[name] = None
    return list(fields), list(tags)


async def read(
    influx: Influx,
    device_type: DeviceType,
    channel: Channel,
    since_ms: int,
    until_ms: int | None = None,
    event_types: tuple[str, ...] = (),
) -> AsyncIterator[Stored]:
    """Every stored reading of one type and channel in [since, until), oldest first."""
    if not _models(device_type, channel):
        return
    fields, tags = _columns(device_type, channel)
    select = ", ".join([*(f"{quote_ident(f)}::field" for f in fields), *(f"{quote_ident(t)}::tag" for t in tags)])
    where = ""
    if event_types:
        where = " AND (" + " OR ".join(f'"event_type" = {quote_literal(e)}' for e in event_types) + ")"
    if until_ms is not None:
        where += f" AND time < {until_ms}ms"
    last_ns = since_ms * 1_000_000 - 1
    name = quote_ident(measurement(device_type, channel))
    while True:
        q = f"SELECT {select} FROM {name} WHERE time > {last_ns}{where} ORDER BY time LIMIT {PAGE}"
        result = await influx.query(q, epoch="ns")
        rows = [row for series in result[0] for row in series.rows()] if result else []
        for row in rows:
            stored = _reading(device_type, channel, row)
            if stored is not None:
                yield stored
        if len(rows) < PAGE:
            return
        last_ns = rows[-1]["time"]


def _reading(device_type: DeviceType, channel: Channel, row: dict[str, Any]) -> Stored | None:
    doc: dict[str, Any] = {"ts": row["time"] // 1_000_000}
    for key, value in row.items():
        if value is None or key in ("time", "device_id"):
            continue
        if key == "event_type":
            doc["type"] = value
        elif key == "port":
            doc["port"] = int(value)
        else:
            doc[key] = value
    try:
        parsed = parse_payload(device_type, channel, json.dumps(doc).encode())
    except (PayloadError, ValueError):
        return None  # written by an older vocabulary: not evidence the engine can weigh
    if not isinstance(parsed, list) or not parsed:
        return None
    return Stored(device_type, row["device_id"], channel, parsed[0])


async def bays_since(influx: Influx, since_ms: int) -> dict[str, int]:
    """For each space sensor occupied now, since when (ms) without a break, back to ``since_ms``."""
    name = quote_ident(measurement(DeviceType.SPACE_SENSOR, Channel.TELEMETRY))
    out: dict[str, int] = {}
    last = await influx.query(f'SELECT last("occupied") FROM {name} WHERE time > {since_ms}ms GROUP BY "device_id"')
    free = await influx.query(
        f'SELECT last("occupied") FROM {name} WHERE time > {since_ms}ms AND "occupied" = false GROUP BY "device_id"'
    )
    first = await influx.query(f'SELECT first("occupied") FROM {name} WHERE time > {since_ms}ms GROUP BY "device_id"')
    last_free = {s.tags["device_id"]: s.values[0][0] for s in (free[0] if free else [])}
    first_seen = {s.tags["device_id"]: s.values[0][0] for s in (first[0] if first else [])}
    for series in last[0] if last else []:
        device = series.tags["device_id"]
        if series.values[0][1] is not True:
            continue
        out[device] = last_free[device] + 1 if device in last_free else first_seen[device]
    return out
