"""The "now" series: state, not history, written at a steady heartbeat (and on every run, zeros
included), so that a board's current-state panel reads the last point of one small series instead
of scanning every device's readings over the time picker's span. ``alerts_open`` (store/alert_copies.py)
is one; ``devices_now`` is another. ``charging_load`` is the history kind: the load per building,
summed once per minute of event time by the rules engine, so a board draws 42 buildings' lines
from one point per building and minute instead of averaging 800 ports per bucket and summing."""

from collections.abc import Mapping

from devices.topics import ESTATE_GRID
from store.series import line

DEVICES_NOW_MEASUREMENT = "devices_now"
CHARGING_LOAD_MEASUREMENT = "charging_load"
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
    site: str, building: str, grid: str | None, power_w: float, charging: int, ports: int, ts_ms: int
) -> str:
    """A building's ``charging_load`` point: the summed latest power of its ports, how many of them
    charge and how many reported lately (the rest are silent and not counted)."""
    fields = {"power_w": float(power_w), "ports_charging": charging, "ports": ports}
    tags = {"building": building, "grid": grid, "site": site}
    return line(CHARGING_LOAD_MEASUREMENT, tags, fields, ts_ms * 1_000_000)
