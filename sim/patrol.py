"""The staff radios: a patrol walking its grid's buildings, GPS fixes, push-to-talk and SOS."""

import math
from typing import Any

from devices.types import DeviceType
from sim.behaviour import Behaviour, Emission, as_event, as_telemetry


class Radio(Behaviour):
    """A patrol radio walking a loop of buildings at walking pace."""

    device_type = DeviceType.RADIO
    base_event_rate_s = 30 / 86_400
    SPEED_M_S = 1.2

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        stops = self.rng.sample(self.estate.buildings, k=min(8, len(self.estate.buildings)))
        self.route = [(b.lat, b.lon) for b in stops]
        self.battery = self.rng.uniform(70, 100)
        self.offset_m = self.rng.uniform(0, 1000)
        self.sos_at_ms: int | None = None

    def position(self, now_ms: int) -> tuple[float, float]:
        legs = [(a, b, _metres(a, b)) for a, b in zip(self.route, self.route[1:] + self.route[:1], strict=True)]
        loop = sum(d for _, _, d in legs) or 1.0
        along = (now_ms / 1000 * self.SPEED_M_S + self.offset_m) % loop
        for a, b, d in legs:
            if along <= d and d > 0:
                f = along / d
                return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f
            along -= d
        return self.route[0]

    def telemetry(self, now_ms: int) -> list[Emission]:
        self.battery = max(5.0, self.battery - 0.01)
        lat, lon = self.position(now_ms)
        out: list[Emission] = [
            as_telemetry(
                {
                    "ts": now_ms,
                    "lat": round(lat, 6),
                    "lon": round(lon, 6),
                    "accuracy_m": round(self.rng.uniform(3, 12), 1),
                    "speed_m_s": self.SPEED_M_S,
                    "battery_pct": round(self.battery, 2),
                }
            )
        ]
        if self.sos_at_ms is not None and now_ms >= self.sos_at_ms:
            out.append(as_event({"ts": now_ms, "type": "sos", "lat": round(lat, 6), "lon": round(lon, 6)}))
            self.sos_at_ms = None
        return out

    def events(self, now_ms: int) -> list[Emission]:
        return [as_event({"ts": now_ms, "type": "ptt", "talk_s": round(self.rng.uniform(1, 20), 1), "channel": 1})]


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (b[0] - a[0]) * 111_320
    dlon = (b[1] - a[1]) * 111_320 * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)
