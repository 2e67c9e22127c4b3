"""The query shapes the boards are built from: the filters every panel shares, and the ways a
board aggregates (events counted, levels summed across devices, the latest state counted), each
with the minimum interval that keeps it right."""

from devices.catalog import CATALOG
from devices.types import Channel, DeviceType
from grafana.model import BUILDING, GRID, SITE
from store.series import measurement

B = f"{SITE} AND {BUILDING} AND $timeFilter"  # building-scoped devices
Z = f"{SITE} AND {GRID} AND $timeFilter"  # zone devices (parking, fire lanes) by grid
S = f"{SITE} AND $timeFilter"  # estate-wide devices (radios, gates) and the platform
PER = "time($__interval)"
TELEMETRY = "/^(" + "|".join(sorted(measurement(t, Channel.TELEMETRY) for t in CATALOG)) + ")$/"


def every_bucket_holds_each(period_s: float) -> str:
    """A panel's minimum interval when it sums levels across series that each come every
    ``period_s``: twice that, so every full bucket holds at least one point of every series. A
    finer one (Grafana's 5 s at a 1 h span) sums only the series that happened to report in each
    bucket, and draws dips and spikes that are not there (tests/grafana/test_sums.py)."""
    return f"{int(2 * period_s)}s"


def level_interval(*types: DeviceType) -> str:
    """The minimum interval for a sum across devices of these types, from the catalog's reporting
    intervals (a device whose registry interval is longer than its type's needs a longer one)."""
    return every_bucket_holds_each(max(CATALOG[t].interval_s for t in types))


def now_window(*types: DeviceType) -> str:
    """A current-state panel's window: two reporting intervals of the slowest of these types and a
    minute, so every device that still reports has a reading in it (one that does not is silent,
    and the device-health board lists it)."""
    return f"{-(-2 * max(CATALOG[t].interval_s for t in types) // 60) + 1}m"


def every_heartbeat_in(period_s: float) -> str:
    """The window of a panel that reads a "now" series written every ``period_s``: two heartbeats."""
    return f"{-(-2 * int(period_s) // 60) + 1}m"


def events(measurement: str, event_type: str, where: str, group: str = "") -> str:
    by = f"GROUP BY {PER}{', ' + group if group else ''} fill(0)"
    return f'SELECT count("seq") FROM "{measurement}" WHERE "event_type" = \'{event_type}\' AND {where} {by}'


def summed_means(measurement: str, field: str, where: str, per: str, inner: str) -> str:
    """Per interval, the mean of each series summed over ``per``: load that does not grow with the
    number of readings in an interval. The outer query repeats the time filter: without one,
    InfluxDB 1.x fills the outer buckets up to now (a week-old span at 5 s: millions of empty ones)."""
    return (
        f'SELECT sum("v") FROM (SELECT mean("{field}") AS "v" FROM "{measurement}" WHERE {where} '
        f"GROUP BY {PER}, {inner}) WHERE $timeFilter GROUP BY {PER}{', ' + per if per else ''}"
    )


def count_last(measurement: str, field: str, where: str, condition: str, per: str = "", series: str = "") -> str:
    """How many series' (devices', or ``series``) latest ``field`` meets ``condition``, by ``per``."""
    inner = ", ".join(x for x in ('"device_id"', series, per) if x)
    outer = f" GROUP BY {per}" if per else ""
    return (
        f'SELECT count("v") FROM (SELECT last("{field}") AS "v" FROM "{measurement}" WHERE {where} '
        f"GROUP BY {inner}) WHERE {condition}{outer}"
    )


STATE_TABLE = {"showHeader": True, "cellHeight": "sm"}
LEGEND_TABLE = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max", "lastNotNull"]}}
HIDE_TIME = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
