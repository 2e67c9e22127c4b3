"""The estate's daily rhythm, as multipliers of a device type's average rate by local hour."""

import datetime as dt
import math
from zoneinfo import ZoneInfo

# People leave 7-9, return 17-20; little moves after midnight.
_FOOTFALL = (
    0.15,
    0.08,
    0.05,
    0.05,
    0.1,
    0.4,
    1.2,
    2.6,
    2.4,
    1.2,
    0.9,
    1.0,
    1.2,
    1.0,
    0.9,
    1.0,
    1.3,
    2.2,
    2.6,
    2.0,
    1.5,
    1.0,
    0.6,
    0.3,
)
# E-bikes are plugged in when people come home and charge through the evening and night.
_CHARGING = (
    0.9,
    0.8,
    0.7,
    0.6,
    0.5,
    0.4,
    0.4,
    0.5,
    0.6,
    0.6,
    0.6,
    0.7,
    0.8,
    0.7,
    0.7,
    0.8,
    1.0,
    1.5,
    2.2,
    2.6,
    2.4,
    2.0,
    1.6,
    1.2,
)


def local_hour(ts_ms: int, tz: ZoneInfo) -> float:
    t = dt.datetime.fromtimestamp(ts_ms / 1000, tz)
    return t.hour + t.minute / 60


def _interpolate(table: tuple[float, ...], hour: float) -> float:
    lo = math.floor(hour) % 24
    frac = hour - math.floor(hour)
    return table[lo] * (1 - frac) + table[(lo + 1) % 24] * frac


def footfall(hour: float) -> float:
    return _interpolate(_FOOTFALL, hour)


def charging(hour: float) -> float:
    return _interpolate(_CHARGING, hour)


def is_night(hour: float) -> bool:
    return hour >= 18 or hour < 7


def daylight(hour: float) -> float:
    """0 at night, 1 at noon: drives corridor lighting and outdoor temperature."""
    return max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
