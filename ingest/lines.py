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
from store.series import FORMAT, TAG_FIELDS, TAG_NAMES, field_kinds, measurement, tag_set


@cache
def _plan(
    model: type[Reading] | type[Status],
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, Callable[[Any], str]], ...]]:
    """Per model, once: which fields become tags (name, tag key) and how each field is written."""
    kinds = field_kinds(model)
    tags = tuple((n, TAG_NAMES.get(n, n)) for n, _ in kinds if n in TAG_FIELDS)
    fields = tuple((n, f"{n}=", FORMAT[k]) for n, k in kinds if n not in TAG_FIELDS)
    return tags, fields


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
        found = measurement(device.type, channel) + tag_set([*tags.items(), *extra])
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
