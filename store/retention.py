"""InfluxDB retention policies: durations as settings write them and as InfluxDB prints them, and
policies the platform creates and keeps (idempotent: created when missing, altered when changed)."""

import re
from dataclasses import dataclass

from store.influx import Influx, quote_ident

# A setting's duration: InfluxQL's own literal (30d, 2w, 12h, 90m, combinations such as 1d12h), or INF.
DURATION_PATTERN = r"^(INF|([0-9]+(w|d|h|m))+)$"
_UNITS_MS = {"w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(w|d|h|m|s)")


def duration_ms(text: str) -> int:
    """'30d', '1d12h', or InfluxDB's '720h0m0s'; 0 means forever ('INF', '0s')."""
    if text.upper() == "INF":
        return 0
    return int(sum(float(n) * _UNITS_MS[u] for n, u in _PART.findall(text)))


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    duration_ms: int
    default: bool


async def policies(influx: Influx) -> dict[str, Policy]:
    rows = (await influx.query(f"SHOW RETENTION POLICIES ON {quote_ident(influx.database)}"))[0]
    out = {}
    for series in rows:
        for row in series.rows():
            name = str(row["name"])
            out[name] = Policy(name, duration_ms(str(row.get("duration", "0s"))), bool(row.get("default")))
    return out


def shard_duration(ms: int) -> str:
    """InfluxDB's own default shard group for a policy of that length (it refuses shards longer
    than the policy, so an ALTER to a short duration must say it)."""
    if ms and ms < 2 * 86_400_000:
        return "1h"
    if ms and ms <= 180 * 86_400_000:
        return "1d"
    return "7d"


async def ensure_policy(influx: Influx, name: str, duration: str) -> str:
    """Create ``name`` with ``duration``, or alter it when it differs; says what it did ('' if nothing)."""
    found = (await policies(influx)).get(name)
    ms = duration_ms(duration)
    literal = "INF" if ms == 0 else duration
    target = f"{quote_ident(name)} ON {quote_ident(influx.database)} DURATION {literal} REPLICATION 1"
    shard = f"SHARD DURATION {shard_duration(ms)}"
    if found is None:
        await influx.query(f"CREATE RETENTION POLICY {target} {shard}", write=True)
        return f"created retention policy {name} ({duration})"
    if found.duration_ms != ms:
        await influx.query(f"ALTER RETENTION POLICY {target} {shard}", write=True)
        return f"retention policy {name} now keeps {duration}"
    return ""
