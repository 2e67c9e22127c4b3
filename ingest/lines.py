"""Readings to InfluxDB line protocol (nanosecond timestamps: see ``timestamp_ns``).

One measurement per device type for telemetry (``smoke_sensor``), one per type for events
(``smoke_sensor_event``, tagged with ``event_type``) and ``device_status``. Tags come from the
registry; fields from the payload model: a field the schema types as int is written as an integer,
every other number as a float, so a field's type never changes between writes (a type conflict makes
InfluxDB refuse the point).
"""

from collections.abc import Callable
from functools import cache
from typing import Any

from devices.payloads.common import Reading, Status
from devices.types import Channel
from store.registry.db import DeviceInfo
from store.series import FORMAT, TAG_FIELDS, TAG_NAMES, FieldKind, escape_key, field_kinds, measurement, tag_set

Writer = Callable[[dict[str, Any]], str]


@cache
def _plan(model: type[Reading] | type[Status]) -> tuple[tuple[tuple[str, str], ...], Writer]:
    """Per model, once: which fields become tags (name, tag key), and a function writing its fields."""
    kinds = field_kinds(model)
    tags = tuple((n, TAG_NAMES.get(n, n)) for n, _ in kinds if n in TAG_FIELDS)
    return tags, _field_writer(tuple((n, k) for n, k in kinds if n not in TAG_FIELDS))


def _field_writer(fields: tuple[tuple[str, FieldKind], ...]) -> Writer:
    """Straight-line code for one model's fields: ingest writes every reading through it, and a loop
    over a plan with a formatter call per field took twice as long. Names and kinds come from the
    payload models (identifiers; FORMAT's four kinds), never from input."""
    body = ["def write(values):", "    out = []"]
    for name, kind in fields:
        assert name.isidentifier(), name
        body += [f"    v = values[{name!r}]", "    if v is not None:"]
        key = escape_key(name)
        if kind == "float":
            body.append(f"        out.append({key + '='!r} + repr(float(v)))")
        elif kind == "int":
            body.append(f"        out.append(f{key + '={v}i'!r})")
        elif kind == "bool":
            body.append(f"        out.append({key + '=true'!r} if v else {key + '=false'!r})")
        else:
            body.append(f"        out.append({key + '='!r} + text(v))")
    body.append("    return ','.join(out)")
    namespace: dict[str, Any] = {"text": _text}
    exec("\n".join(body), namespace)
    writer: Writer = namespace["write"]
    return writer


_texts: dict[object, str] = {}
TEXTS_KEPT = 10_000


def _text(value: Any) -> str:
    """A string field, escaped and quoted; memoised, as most are enum members (``state``)."""
    found = _texts.get(value)
    if found is None:
        found = FORMAT["str"](value)
        if len(_texts) < TEXTS_KEPT:
            _texts[value] = found
    return found


_series: dict[tuple[str, str, Channel, tuple[tuple[str, str], ...]], str] = {}


def forget_series() -> None:
    """Drop cached series keys: call when the registry may have moved a device."""
    _series.clear()


def series_key(device: DeviceInfo, channel: Channel, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """Measurement and sorted tags of a device's series; a few per device, so cached by cheap keys."""
    key = (device.site, device.id, channel, extra)
    found = _series.get(key)
    if found is None:
        tags = {
            "site": device.site,
            "device_type": device.type.value,
            "device_id": device.id,
            "building": device.building,
            "unit": device.unit,
            "zone": device.zone,
            "grid": device.grid,
        }
        found = measurement(device.type, channel) + tag_set([*tags.items(), *extra])
        _series[key] = found
    return found


def encode(device: DeviceInfo, channel: Channel, item: Reading | Status, series: str | None = None) -> str:
    """One line of line protocol (no trailing newline). ``series``: the device's series key for this
    channel when the caller has it (models without tag fields only)."""
    tag_plan, write = _plan(type(item))
    values = item.__dict__
    if tag_plan:
        extra = tuple(
            (key, str(getattr(values[name], "value", values[name])))
            for name, key in tag_plan
            if values[name] is not None
        )
        series = series_key(device, channel, extra)
    elif series is None:
        series = series_key(device, channel)
    seq = values.get("seq", 0)
    return f"{series} {write(values)} {values['ts'] * 1_000_000 + seq % 1_000_000}"


def has_tag_fields(model: type[Reading] | type[Status]) -> bool:
    return bool(_plan(model)[0])


def timestamp_ns(item: Reading | Status) -> int:
    """The device's ``ts`` (ms), with the reading's seq in the sub-millisecond digits.

    Two readings of one device in the same millisecond (two plate reads, say) would otherwise be one
    point, the second overwriting the first; a redelivered reading has the same seq, so it still
    overwrites itself. Queries see the device's millisecond.
    """
    seq = getattr(item, "seq", 0)
    return item.ts * 1_000_000 + seq % 1_000_000
