"""What each device type sends, and when: telemetry at its interval, events as a Poisson process
(the base class and the payload helpers are in sim/behaviour.py, the radios in sim/patrol.py)."""

import random
from dataclasses import dataclass
from typing import Any

from devices.estate import Device, Estate
from devices.types import DeviceType
from sim import rhythm
from sim.behaviour import Behaviour, Emission, Fleet, as_event, as_telemetry
from sim.patrol import Radio


class DoorController(Behaviour):
    device_type = DeviceType.DOOR_CONTROLLER

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        gate = self.device.unit is None
        # A unit door sees ~100 passages a day; an estate gate thousands.
        self.base_event_rate_s = (4000 if gate else 100) / 86_400
        self.uptime_s = self.rng.uniform(0, 30 * 86_400)

    def event_rate(self, now_ms: int) -> float:
        return self.base_event_rate_s * rhythm.footfall(self.hour(now_ms))

    def telemetry(self, now_ms: int) -> list[Emission]:
        self.uptime_s += self.device.reporting_interval_s
        return [
            as_telemetry(
                {
                    "ts": now_ms,
                    "uptime_s": round(self.uptime_s),
                    "rssi_dbm": round(self.jitter(-60, 5), 1),
                    "door": "closed",
                }
            )
        ]

    def events(self, now_ms: int) -> list[Emission]:
        r = self.rng.random()
        method = self.rng.choices(("card", "face", "qr", "password"), (45, 45, 6, 4))[0]
        if r < 0.0002:
            return [
                as_event({"ts": now_ms, "type": "forced_open"}),
                as_event({"ts": now_ms + 20_000, "type": "door_closed"}, 20_000),
            ]
        granted = r > 0.03
        out = [
            as_event(
                {
                    "ts": now_ms,
                    "type": "access",
                    "method": method,
                    "granted": granted,
                    "credential": f"c{self.rng.randrange(10**6):06d}",
                }
            )
        ]
        if not granted:
            return out
        out.append(as_event({"ts": now_ms + 300, "type": "door_opened"}, 300))
        if self.rng.random() < 0.005:
            out.append(as_event({"ts": now_ms + 2_000, "type": "tailgating", "persons": 2}, 2_000))
        open_ms = 150_000 if self.rng.random() < 0.01 else self.rng.randrange(3_000, 9_000)
        if open_ms > 120_000:
            out.append(as_event({"ts": now_ms + 120_300, "type": "held_open", "open_s": 120.0}, 120_300))
        out.append(as_event({"ts": now_ms + 300 + open_ms, "type": "door_closed"}, 300 + open_ms))
        return out


class VehicleGate(Behaviour):
    device_type = DeviceType.VEHICLE_GATE
    base_event_rate_s = 4500 / 86_400

    def event_rate(self, now_ms: int) -> float:
        return self.base_event_rate_s * rhythm.footfall(self.hour(now_ms))

    def telemetry(self, now_ms: int) -> list[Emission]:
        return [as_telemetry({"ts": now_ms, "uptime_s": 86_400.0, "barrier": "down", "rssi_dbm": -55.0})]

    def events(self, now_ms: int) -> list[Emission]:
        confidence = round(self.rng.uniform(0.85, 0.99), 3)
        if self.rng.random() < 0.02:
            return [
                as_event(
                    {
                        "ts": now_ms,
                        "type": "plate_read",
                        "plate": None,
                        "direction": self.rng.choice(("in", "out")),
                        "confidence": 0.0,
                    }
                )
            ]
        plate = self.rng.choice(self.fleet.plates)
        direction = "out" if plate in self.fleet.inside else "in"
        (self.fleet.inside.discard if direction == "out" else self.fleet.inside.add)(plate)
        read = plate
        if self.rng.random() < 0.01:  # a misread: one character wrong
            i = self.rng.randrange(2, len(plate))
            read = plate[:i] + self.rng.choice("0123456789") + plate[i + 1 :]
        return [
            as_event(
                {"ts": now_ms, "type": "plate_read", "plate": read, "direction": direction, "confidence": confidence}
            )
        ]


@dataclass
class _Port:
    state: str = "idle"
    started_ms: int = 0
    hours: float = 0.0
    energy_wh: float = 0.0
    session: int = 0


class EvCharger(Behaviour):
    """E-bike piles with two ports: constant current, then a taper, then float."""

    device_type = DeviceType.EV_CHARGER
    PORTS = 2

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ports = [_Port() for _ in range(self.PORTS)]
        self.overload_next = False

    def _power(self, port: _Port, now_ms: int) -> float:
        elapsed_h = (now_ms - port.started_ms) / 3_600_000
        progress = elapsed_h / port.hours
        if progress < 0.7:
            return 220.0
        if progress < 1.0:
            return 220.0 * (1 - (progress - 0.7) / 0.3) + 15.0
        return 8.0

    def telemetry(self, now_ms: int) -> list[Emission]:
        out: list[Emission] = []
        interval_h = self.device.reporting_interval_s / 3600
        plug_p = min(1.0, 0.08 * rhythm.charging(self.hour(now_ms)) * interval_h * 4)
        for n, port in enumerate(self.ports, start=1):
            sid = f"{self.device.id}-{n}-{port.session}"
            if port.state == "idle" and self.rng.random() < plug_p:
                port.state, port.started_ms, port.energy_wh = "charging", now_ms, 0.0
                port.hours = self.rng.uniform(3, 8)
                port.session += 1
                sid = f"{self.device.id}-{n}-{port.session}"
                out.append(as_event({"ts": now_ms, "type": "session_start", "port": n, "session_id": sid}))
            elif port.state == "charging" and (now_ms - port.started_ms) / 3_600_000 > port.hours + 0.5:
                reason = "overload" if self.overload_next else "full"
                self.overload_next = False
                out.append(
                    as_event(
                        {
                            "ts": now_ms,
                            "type": "session_stop",
                            "port": n,
                            "session_id": sid,
                            "reason": reason,
                            "energy_wh": round(port.energy_wh, 1),
                            "duration_s": round((now_ms - port.started_ms) / 1000, 1),
                        }
                    )
                )
                port.state = "idle"
            power = self._power(port, now_ms) if port.state == "charging" else 0.0
            power = max(0.0, self.jitter(power, 3) if power else 0.0)
            port.energy_wh += power * interval_h
            voltage = self.jitter(220, 4)
            out.append(
                as_telemetry(
                    {
                        "ts": now_ms,
                        "port": n,
                        "state": port.state,
                        "voltage_v": round(voltage, 1),
                        "current_a": round(power / voltage, 3),
                        "power_w": round(power, 1),
                        "energy_wh": round(port.energy_wh if port.state == "charging" else 0.0, 1),
                        "temp_c": round(self.jitter(24 + power / 20, 0.5), 1),
                    }
                )
            )
        return out


class SmokeSensor(Behaviour):
    device_type = DeviceType.SMOKE_SENSOR

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.battery = self.rng.uniform(60, 100)
        self.alarm_started_ms: int | None = None
        self.state = "normal"

    def alarm(self, now_ms: int) -> None:
        self.alarm_started_ms = now_ms

    def _smoke(self, now_ms: int) -> tuple[float, float]:
        if self.alarm_started_ms is None:
            return max(0.0, self.jitter(0.2, 0.15)), self.jitter(21 + 3 * rhythm.daylight(self.hour(now_ms)), 0.3)
        minutes = (now_ms - self.alarm_started_ms) / 60_000
        return min(100.0, 4.0 + 6 * minutes), min(120.0, 24 + 4 * minutes)

    def telemetry(self, now_ms: int) -> list[Emission]:
        self.battery = max(0.0, self.battery - 0.0005)
        smoke, temp = self._smoke(now_ms)
        out: list[Emission] = []
        if self.alarm_started_ms is not None and self.state != "alarm":
            self.state = "alarm"
            out.append(
                as_event(
                    {"ts": now_ms, "type": "alarm", "smoke_obscuration_pct": round(smoke, 2), "temp_c": round(temp, 1)}
                )
            )
        out.append(
            as_telemetry(
                {
                    "ts": now_ms,
                    "state": self.state,
                    "smoke_obscuration_pct": round(smoke, 2),
                    "temp_c": round(temp, 1),
                    "battery_pct": round(self.battery, 2),
                    "rssi_dbm": round(self.jitter(-85, 6), 1),
                }
            )
        )
        return out


class Camera(Behaviour):
    device_type = DeviceType.CAMERA

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        zone = next((z for z in self.estate.zones if z.id == self.device.zone), None)
        self.zone_kind = zone.kind.value if zone else None
        # Entrance cameras see e-bikes carried in; zone cameras see vehicles stop and plates pass.
        self.base_event_rate_s = (40 if self.zone_kind else 6) / 86_400
        self.blocked_by: str | None = None

    def event_rate(self, now_ms: int) -> float:
        return self.base_event_rate_s * rhythm.footfall(self.hour(now_ms))

    def telemetry(self, now_ms: int) -> list[Emission]:
        return [
            as_telemetry({"ts": now_ms, "uptime_s": 86_400.0, "fps": round(self.jitter(25, 0.5), 1), "stream_ok": True})
        ]

    def events(self, now_ms: int) -> list[Emission]:
        conf = round(self.rng.uniform(0.8, 0.98), 3)
        if self.zone_kind is None:
            where = "lift" if self.rng.random() < 0.4 else "entrance"
            return [as_event({"ts": now_ms, "type": "ebike_detected", "location": where, "confidence": conf})]
        plate = self.rng.choice(self.fleet.plates)
        if self.zone_kind == "parking":
            return [
                as_event(
                    {
                        "ts": now_ms,
                        "type": "plate_sighting",
                        "plate": plate,
                        "confidence": conf,
                        "zone": self.device.zone,
                    }
                )
            ]
        if self.blocked_by is not None:
            return []
        # A delivery stop in a fire lane: in and out within minutes.
        stop_ms = self.rng.randrange(60_000, 240_000)
        return [
            as_event(
                {
                    "ts": now_ms,
                    "type": "zone_occupied",
                    "zone": self.device.zone,
                    "object_kind": "car",
                    "plate": plate,
                    "confidence": conf,
                }
            ),
            as_event({"ts": now_ms + stop_ms, "type": "zone_cleared", "zone": self.device.zone}, stop_ms),
        ]


class PowerMeter(Behaviour):
    """A stairwell corridor circuit: lights at night, a little standby by day."""

    device_type = DeviceType.POWER_METER

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.energy_wh = self.rng.uniform(1e5, 1e6)
        self.extra: list[tuple[int, float]] = []  # (start ms, hours) of injected chargers

    def add_charger(self, start_ms: int, hours: float) -> None:
        self.extra.append((start_ms, hours))

    def _charger_w(self, now_ms: int) -> float:
        total = 0.0
        for start, hours in self.extra:
            if now_ms < start:
                continue
            progress = (now_ms - start) / 3_600_000 / hours
            if progress < 0.6:
                total += 240.0
            elif progress < 1.0:
                total += 240.0 * (1 - (progress - 0.6) / 0.4) + 10.0
        return total

    def telemetry(self, now_ms: int) -> list[Emission]:
        hour = self.hour(now_ms)
        base = 8.0 if rhythm.daylight(hour) > 0.2 else 28.0
        power = max(0.0, self.jitter(base, 2.0)) + self._charger_w(now_ms)
        voltage = self.jitter(221, 3)
        self.energy_wh += power * self.device.reporting_interval_s / 3600
        return [
            as_telemetry(
                {
                    "ts": now_ms,
                    "power_w": round(power, 1),
                    "voltage_v": round(voltage, 1),
                    "current_a": round(power / voltage, 3),
                    "energy_wh": round(self.energy_wh, 1),
                    "power_factor": 0.95,
                }
            )
        ]


class SpaceSensor(Behaviour):
    device_type = DeviceType.SPACE_SENSOR

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        zone = next(z for z in self.estate.zones if z.id == self.device.zone) if self.device.zone else None
        self.fire_lane = zone is not None and zone.kind.value == "fire_lane"
        self.occupied = not self.fire_lane and self.rng.random() < 0.8
        self.battery = self.rng.uniform(50, 100)
        self.blocked_until_ms = 0
        self.base_event_rate_s = (6 if self.fire_lane else 3) / 86_400

    def block(self, until_ms: int) -> None:
        self.blocked_until_ms = until_ms

    def telemetry(self, now_ms: int) -> list[Emission]:
        out: list[Emission] = []
        if self.fire_lane:
            should = now_ms < self.blocked_until_ms
            if should != self.occupied:
                self.occupied = should
                out.append(as_event({"ts": now_ms, "type": "occupied" if should else "freed"}))
        self.battery = max(0.0, self.battery - 0.0002)
        out.append(
            as_telemetry(
                {
                    "ts": now_ms,
                    "occupied": self.occupied,
                    "battery_pct": round(self.battery, 2),
                    "rssi_dbm": round(self.jitter(-90, 5), 1),
                }
            )
        )
        return out

    def events(self, now_ms: int) -> list[Emission]:
        if now_ms < self.blocked_until_ms:
            return []
        if self.fire_lane:
            stop_ms = self.rng.randrange(60_000, 240_000)
            return [
                as_event({"ts": now_ms, "type": "occupied"}),
                as_event({"ts": now_ms + stop_ms, "type": "freed"}, stop_ms),
            ]
        self.occupied = not self.occupied
        return [as_event({"ts": now_ms, "type": "occupied" if self.occupied else "freed"})]


BEHAVIOURS: dict[DeviceType, type[Behaviour]] = {
    b.device_type: b
    for b in (DoorController, VehicleGate, EvCharger, SmokeSensor, Camera, PowerMeter, SpaceSensor, Radio)
}


def sample_devices(devices: list[Device], limit: int | None) -> list[Device]:
    """At most ``limit`` devices, taken round-robin over the types so a small run still has every type."""
    if limit is None or limit >= len(devices):
        return devices
    by_type: dict[DeviceType, list[Device]] = {}
    for d in devices:
        by_type.setdefault(d.type, []).append(d)
    queues = [iter(v) for v in by_type.values()]
    chosen: list[Device] = []
    while len(chosen) < limit:
        for q in queues:
            taken = next(q, None)
            if taken is not None and len(chosen) < limit:
                chosen.append(taken)
    return chosen


def behaviour_for(device: Device, estate: Estate, seed: int, fleet: Fleet) -> Behaviour:
    rng = random.Random(f"{seed}:{device.id}")
    return BEHAVIOURS[device.type](device, estate, rng, fleet)
