"""The "now" series: state, not history, written at a steady heartbeat (and on every run, zeros
included), so that a board's current-state panel reads the last point of one small series instead
of scanning every device's readings over the time picker's span. ``alerts_open`` (store/alert_copies.py)
is one; ``devices_now`` is the other."""

from collections.abc import Mapping

from devices.topics import ESTATE_GRID
from store.series import line

DEVICES_NOW_MEASUREMENT = "devices_now"


def devices_now_lines(site: str, counts: Mapping[tuple[str, str | None], tuple[int, int]], ts_ns: int) -> list[str]:
    """One ``devices_now`` point per (device type, grid): devices expected, reporting and silent
    (estate-wide devices, with no grid, under the estate's own grid tag)."""
    out = []
    for (device_type, grid), (expected, silent) in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        fields = {"expected": expected, "reporting": expected - silent, "silent": silent}
        tags = {"device_type": device_type, "grid": grid or ESTATE_GRID, "site": site}
        out.append(line(DEVICES_NOW_MEASUREMENT, tags, fields, ts_ns))
    return out
