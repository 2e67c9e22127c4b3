"""The "now" series: state, not history, written at a steady heartbeat (and on every run, zeros
included), so that a board's current-state panel reads the last point of one small series instead
of scanning every device's readings over the time picker's span. ``alerts_open`` (store/alert_copies.py)
is one; ``devices_now`` is another. ``charging_load`` and ``smoke_signal`` are the history kind: per
building, once a minute of event time, by the rules engine (rules/loads.py), so a board draws a line
per building from one point per building and minute instead of grouping 800 ports or 4,700
sensors per bucket (InfluxDB 1.6's cost grows with series x buckets)."""

from collections.abc import Mapping

from devices.topics import ESTATE_GRID
from store.series import line

DEVICES_NOW_MEASUREMENT = "devices_now"
CHARGING_LOAD_MEASUREMENT = "charging_load"
SMOKE_SIGNAL_MEASUREMENT = "smoke_signal"
CHARGING_LOAD_PERIOD_S = 60


def devices_now_lines(site: str, counts: Mapping[tuple[str, str | None], tuple[int, int]], ts_ns: int) -> list[str]:
    """One ``devices_now`` point per (device type, grid): devices expected, reporting and silent
    (estate-wide devices, with no grid, under the estate's own grid tag)."""
    out = []
    for (device_type, grid), (expected, silent) in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        fields = {"expected": expected, "reporting": expected - silent, "silent": silent}
        tags = {"device_type": device_type, "grid": grid or ESTATE_GRID, "site": site}
        out.append(line(DEVICES_NOW_MEASUREMENT, tags, fields, ts_ns))
    return out


def charging_load_line(
    site: str, building: str, grid: str | None, power_w: float, charging: int, ports: int, temp_max_c: float,
    ts_ms: int,
) -> str:  # fmt: skip
    """A building's ``charging_load`` point: the summed latest power of its ports, how many of them
    charge, how many reported lately (the rest are silent and not counted) and the hottest."""
    fields = {"power_w": float(power_w), "ports_charging": charging, "ports": ports, "temp_max_c": float(temp_max_c)}
    tags = {"building": building, "grid": grid, "site": site}
    return line(CHARGING_LOAD_MEASUREMENT, tags, fields, ts_ms * 1_000_000)


def smoke_signal_line(
    site: str, building: str, grid: str | None, rssi_mean_dbm: float, sensors: int, ts_ms: int
) -> str:
    """A building's ``smoke_signal`` point: the mean latest signal of its sensors still reporting."""
    fields = {"rssi_mean_dbm": round(float(rssi_mean_dbm), 3), "sensors": sensors}
    tags = {"building": building, "grid": grid, "site": site}
    return line(SMOKE_SIGNAL_MEASUREMENT, tags, fields, ts_ms * 1_000_000)
