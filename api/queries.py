"""InfluxQL built only from allow-listed names and escaped literals: a request chooses among the
measurements and fields ingest writes (store/series.py) and passes values that are quoted, so no
parameter can add a statement, a clause or a name of its own."""

import re
from dataclasses import dataclass
from typing import Literal

from devices.types import Channel, DeviceType
from store.influx import quote_ident, quote_literal
from store.series import all_fields, measurement

Agg = Literal["mean", "min", "max", "sum", "count", "last"]
NUMERIC_ONLY = {"mean", "min", "max", "sum"}
_INTERVAL = re.compile(r"^([1-9][0-9]{0,4})(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class QueryError(ValueError):
    """A request that names something not written, or asks for too much: a 422."""


def interval_ms(text: str) -> int:
    m = _INTERVAL.fullmatch(text)
    if m is None:
        raise QueryError(f"interval {text!r}: a number and s, m, h or d (e.g. 5m)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def measurement_for(device_type: DeviceType, channel: Channel) -> str:
    name = measurement(device_type, channel)
    if name not in all_fields():
        raise QueryError(f"{device_type.value} has no {channel.value} readings")
    return name


def check_field(name: str, field: str, agg: Agg) -> None:
    kinds = all_fields()[name]
    if field not in kinds:
        raise QueryError(f"{name} has no field {field!r}; it has {', '.join(sorted(kinds))}")
    if agg in NUMERIC_ONLY and kinds[field] not in ("int", "float"):
        raise QueryError(f"{agg} needs a number; {field!r} is {kinds[field]}")


@dataclass(frozen=True)
class Filter:
    site: str
    device_ids: tuple[str, ...] = ()
    building: str | None = None

    def sql(self) -> str:
        parts = [f'"site" = {quote_literal(self.site)}']
        if self.device_ids:
            parts.append("(" + " OR ".join(f'"device_id" = {quote_literal(d)}' for d in self.device_ids) + ")")
        if self.building is not None:
            parts.append(f'"building" = {quote_literal(self.building)}')
        return " AND ".join(parts)


def aggregate(
    name: str, field: str, agg: Agg, where: Filter, start_ms: int, end_ms: int, every_ms: int,
    group: Literal["device", "building", "none"], limit: int, offset: int,
) -> str:  # fmt: skip
    by = {"device": ', "device_id"', "building": ', "building"', "none": ""}[group]
    return (
        f"SELECT {agg}({quote_ident(field)}) AS \"value\" FROM {quote_ident(name)} WHERE {where.sql()} "
        f"AND time >= {start_ms}ms AND time < {end_ms}ms GROUP BY time({every_ms}ms){by} fill(none) "
        f"SLIMIT {limit} SOFFSET {offset}"
    )


def latest(name: str, where: Filter, within_ms: int) -> str:
    return (
        f"SELECT * FROM {quote_ident(name)} WHERE {where.sql()} AND time > now() - {within_ms}ms "
        f'GROUP BY "device_id" ORDER BY time DESC LIMIT 1'
    )
