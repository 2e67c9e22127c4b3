"""Readings to InfluxDB line protocol (nanosecond timestamps: see ``timestamp_ns``).

One measurement per device type for telemetry (``smoke_sensor``), one per type for events
(``smoke_sensor_event``, tagged with ``event_type``) and ``device_status``. Tags come from the
registry; fields from the payload model: a field the schema types as int is written as an integer,
every other number as a float, so a field's type never changes between writes (a type conflict makes
InfluxDB refuse the point).
"""

import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Any, Literal

from devices.catalog import CATALOG
from devices.payloads.common import Reading, Status
from devices.types import Channel, DeviceType
from store.registry.db import DeviceInfo

STATUS_MEASUREMENT = "device_status"
# Payload fields that become tags rather than fields: low-cardinality keys that split series.
TAG_FIELDS = frozenset({"port", "type"})
_TAG_NAMES = {"type": "event_type"}

FieldKind = Literal["int", "float", "bool", "str"]


def escape_key(text: str) -> str:
    """Measurement names, tag keys and tag values: commas, equals signs and spaces escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ").replace("\n", "\\n")


def escape_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _kind(annotation: Any) -> FieldKind:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = {_kind(a) for a in typing.get_args(annotation) if a is not type(None)}
        if len(kinds) != 1:
            raise TypeError(f"field of mixed type {annotation}")
        return kinds.pop()
    if origin is Literal or (isinstance(annotation, type) and issubclass(annotation, (str, Enum))):
        return "str"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    raise TypeError(f"no line-protocol type for {annotation}")


@cache
def field_kinds(model: type[Reading] | type[Status]) -> tuple[tuple[str, FieldKind], ...]:
    """(name, kind) of every field of a payload model, ``ts`` left out (it is the timestamp)."""
    return tuple((name, _kind(info.annotation)) for name, info in model.model_fields.items() if name != "ts")


def _float(value: Any) -> str:
    return repr(float(value))


def _int(value: Any) -> str:
    return f"{value}i"


def _bool(value: Any) -> str:
    return "true" if value else "false"


def _str(value: Any) -> str:
    return escape_string(value.value if isinstance(value, Enum) else str(value))


_FORMAT = {"float": _float, "int": _int, "bool": _bool, "str": _str}


@cache
def _plan(
    model: type[Reading] | type[Status],
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, Callable[[Any], str]], ...]]:
    """Per model, once: which fields become tags (name, tag key) and how each field is written."""
    kinds = field_kinds(model)
    tags = tuple((n, _TAG_NAMES.get(n, n)) for n, _ in kinds if n in TAG_FIELDS)
    fields = tuple((n, f"{n}=", _FORMAT[k]) for n, k in kinds if n not in TAG_FIELDS)
    return tags, fields


def measurement(device_type: DeviceType, channel: Channel) -> str:
    if channel is Channel.STATUS:
        return STATUS_MEASUREMENT
    return device_type.value if channel is Channel.TELEMETRY else f"{device_type.value}_event"


_series: dict[tuple[str, str, Channel, tuple[tuple[str, str], ...]], str] = {}


def forget_series() -> None:
    """Drop cached series keys: call when the registry may have moved a device."""
    _series.clear()


def _series_key(device: DeviceInfo, channel: Channel, extra: tuple[tuple[str, str], ...]) -> str:
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
        pairs = sorted([*((k, v) for k, v in tags.items() if v), *extra])
        found = measurement(device.type, channel) + "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in pairs)
        _series[key] = found
    return found


def encode(device: DeviceInfo, channel: Channel, item: Reading | Status) -> str:
    """One line of line protocol (no trailing newline), timestamp in milliseconds."""
    tag_plan, field_plan = _plan(type(item))
    values = item.__dict__
    extra = (
        tuple(
            (key, str(getattr(values[name], "value", values[name])))
            for name, key in tag_plan
            if values[name] is not None
        )
        if tag_plan
        else ()
    )
    fields = ",".join([prefix + fmt(v) for name, prefix, fmt in field_plan if (v := values[name]) is not None])
    return f"{_series_key(device, channel, extra)} {fields} {timestamp_ns(item)}"


def timestamp_ns(item: Reading | Status) -> int:
    """The device's ``ts`` (ms), with the reading's seq in the sub-millisecond digits.

    Two readings of one device in the same millisecond (two plate reads, say) would otherwise be one
    point, the second overwriting the first; a redelivered reading has the same seq, so it still
    overwrites itself. Queries see the device's millisecond.
    """
    seq = getattr(item, "seq", 0)
    return item.ts * 1_000_000 + seq % 1_000_000


def all_fields() -> dict[str, dict[str, FieldKind]]:
    """Every measurement ingest writes and its fields with their kinds (for dashboards and tests)."""
    out: dict[str, dict[str, FieldKind]] = {STATUS_MEASUREMENT: dict(field_kinds(Status))}
    for device_type, spec in CATALOG.items():
        out[measurement(device_type, Channel.TELEMETRY)] = {
            n: k for n, k in field_kinds(spec.telemetry) if n not in TAG_FIELDS
        }
        events: dict[str, FieldKind] = {}
        for model in spec.event_models():
            events.update({n: k for n, k in field_kinds(model) if n not in TAG_FIELDS})
        if events:
            out[measurement(device_type, Channel.EVENT)] = events
    return out
