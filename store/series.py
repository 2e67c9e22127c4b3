"""How readings are stored in InfluxDB: measurement names, which payload fields become tags, and the
kind of every field. Ingest writes by these rules; rules, dashboards and the API read by them.
"""

import types
import typing
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from functools import cache
from typing import Any, Literal

from devices.catalog import CATALOG
from devices.payloads.common import Reading, Status
from devices.types import Channel, DeviceType

STATUS_MEASUREMENT = "device_status"
# The platform's own periodic points, by default: their writers' settings and the boards' minimum
# intervals (grafana/boards.py, grafana/operations.py) both read these, so a board never divides
# time finer than they come.
STATS_PERIOD_S = 10  # ingest_stats, per ingest worker
COMPLETENESS_PERIOD_S = 60  # ingest_completeness (per device) and its sums per type
# Ingest's completeness window summed per device type: what the boards' by-type panels read (eight
# points a period instead of one per device; a day of the reference estate is ~3 M per-device points).
COMPLETENESS_BY_TYPE_MEASUREMENT = "ingest_completeness_by_type"
# Payload fields that become tags rather than fields: low-cardinality keys that split series.
TAG_FIELDS = frozenset({"port", "type"})
TAG_NAMES = {"type": "event_type"}

FieldKind = Literal["int", "float", "bool", "str"]


def escape_key(text: str) -> str:
    """Measurement names, tag keys and tag values: commas, equals signs and spaces escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ").replace("\n", "\\n")


def escape_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _float(value: Any) -> str:
    return repr(float(value))  # an int in a float field stays a float: a field's type never changes


def _int(value: Any) -> str:
    return f"{value}i"


def _bool(value: Any) -> str:
    return "true" if value else "false"


def _str(value: Any) -> str:
    return escape_string(value.value if isinstance(value, Enum) else str(value))


# How each kind of field is written; ingest's per-model plans (ingest/lines.py) pick from it once.
FORMAT: dict[FieldKind, Callable[[Any], str]] = {"float": _float, "int": _int, "bool": _bool, "str": _str}


def value_kind(value: object) -> FieldKind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def field_value(value: object) -> str:
    """A field as line protocol writes it, kind taken from the Python value: ``true``, ``3i``,
    ``3.0``, ``"text"``."""
    return FORMAT[value_kind(value)](value)


def tag_set(pairs: Iterable[tuple[str, str | None]]) -> str:
    """``,key=value`` for each pair with a value, sorted by key as InfluxDB prefers."""
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(pairs) if v)


def line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, object], ts: int) -> str:
    """One point: tags sorted (empty ones left out), fields in the order given, ``ts`` as is."""
    field_part = ",".join(f"{escape_key(k)}={field_value(v)}" for k, v in fields.items() if v is not None)
    return f"{escape_key(measurement)}{tag_set(tags.items())} {field_part} {ts}"


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


def measurement(device_type: DeviceType, channel: Channel) -> str:
    if channel is Channel.STATUS:
        return STATUS_MEASUREMENT
    return device_type.value if channel is Channel.TELEMETRY else f"{device_type.value}_event"


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
