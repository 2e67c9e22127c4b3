"""Incidents the simulator injects on demand, so every rule can be shown a real case."""

import random
from dataclasses import dataclass
from enum import StrEnum

from devices.estate import Estate, ZoneKind
from devices.types import Channel, DeviceType
from sim.behaviour import Behaviour, Emission, make_plate
from sim.behaviours import Camera, PowerMeter, SmokeSensor, SpaceSensor
from sim.patrol import Radio

DAY_MS = 86_400_000


class IncidentKind(StrEnum):
    FLYING_LEAD = "flying_lead"
    BLOCKED_FIRE_LANE = "blocked_fire_lane"
    ZOMBIE_CAR = "zombie_car"
    SMOKE_ALARM = "smoke_alarm"
    SOS = "sos"
    SILENT = "silent"


# What a target names for each kind, for help texts and errors.
TARGETS = {
    IncidentKind.FLYING_LEAD: "a power_meter id",
    IncidentKind.BLOCKED_FIRE_LANE: "a fire-lane zone id",
    IncidentKind.ZOMBIE_CAR: "a parking space_sensor id",
    IncidentKind.SMOKE_ALARM: "a smoke_sensor id",
    IncidentKind.SOS: "a radio id",
    IncidentKind.SILENT: "any device id",
}


class IncidentError(ValueError):
    pass


@dataclass(frozen=True)
class Incident:
    kind: IncidentKind
    target: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "Incident":
        """``KIND`` or ``KIND:TARGET``, e.g. ``flying_lead:pm-b001-u1``."""
        name, _, target = spec.partition(":")
        try:
            kind = IncidentKind(name)
        except ValueError:
            raise IncidentError(
                f"unknown incident {name!r}; one of: {', '.join(k.value for k in IncidentKind)}"
            ) from None
        return cls(kind, target or None)


def _pick(
    behaviours: dict[str, Behaviour], rng: random.Random, kind: type[Behaviour], target: str | None, what: str
) -> Behaviour:
    if target is not None:
        found = behaviours.get(target)
        if not isinstance(found, kind):
            raise IncidentError(f"{target!r} is not {what} of this estate (or not simulated here)")
        return found
    candidates = sorted((b for b in behaviours.values() if isinstance(b, kind)), key=lambda b: b.device.id)
    if not candidates:
        raise IncidentError(f"the simulated devices include no {what}")
    return rng.choice(candidates)


@dataclass
class Injected:
    description: str
    emissions: list[tuple[str, Emission]]  # (device id, one-off emission)
    tick_now: list[str]  # devices whose next report should not wait for their interval


def inject(
    incident: Incident, behaviours: dict[str, Behaviour], estate: Estate, now_ms: int, rng: random.Random
) -> Injected:
    """Arm ``incident`` on the simulated devices."""
    description, extra, subjects = _arm(incident, behaviours, estate, now_ms, rng)
    ticks = {device for device, _ in extra} | set(subjects)
    return Injected(description, extra, sorted(ticks & behaviours.keys()))


def _arm(
    incident: Incident, behaviours: dict[str, Behaviour], estate: Estate, now_ms: int, rng: random.Random
) -> tuple[str, list[tuple[str, Emission]], list[str]]:
    kind, target = incident.kind, incident.target
    extra: list[tuple[str, Emission]] = []
    if kind is IncidentKind.FLYING_LEAD:
        meter = _pick(behaviours, rng, PowerMeter, target, TARGETS[kind])
        assert isinstance(meter, PowerMeter)
        meter.add_charger(now_ms, hours=4.0)
        camera = behaviours.get(f"cam-{meter.device.unit}")
        if camera is not None:
            extra.append(
                (
                    camera.device.id,
                    (
                        0,
                        Channel.EVENT,
                        {"ts": now_ms - 20 * 60_000, "type": "ebike_detected", "location": "lift", "confidence": 0.93},
                    ),
                )
            )
        return f"flying-lead charging on {meter.device.id} (unit {meter.device.unit})", extra, [meter.device.id]
    if kind is IncidentKind.BLOCKED_FIRE_LANE:
        lanes = [z.id for z in estate.zones if z.kind is ZoneKind.FIRE_LANE]
        zone = target or (rng.choice(lanes) if lanes else None)
        if zone not in lanes:
            raise IncidentError(f"{zone!r} is not a fire-lane zone of this estate")
        until = now_ms + 30 * 60_000
        sensors = [b for b in behaviours.values() if isinstance(b, SpaceSensor) and b.device.zone == zone]
        for s in sensors:
            s.block(until)
        plate = make_plate(rng)
        for cam in (b for b in behaviours.values() if isinstance(b, Camera) and b.device.zone == zone):
            cam.blocked_by = plate
            extra.append(
                (
                    cam.device.id,
                    (
                        0,
                        Channel.EVENT,
                        {
                            "ts": now_ms,
                            "type": "zone_occupied",
                            "zone": zone,
                            "object_kind": "car",
                            "plate": plate,
                            "confidence": 0.95,
                        },
                    ),
                )
            )
            extra.append(
                (cam.device.id, (until - now_ms, Channel.EVENT, {"ts": until, "type": "zone_cleared", "zone": zone}))
            )
        if not sensors and not extra:
            raise IncidentError(f"no simulated sensor or camera watches {zone!r}")
        return f"fire lane {zone} blocked by {plate} for 30 min", extra, [s.device.id for s in sensors]
    if kind is IncidentKind.ZOMBIE_CAR:
        bay = _pick(behaviours, rng, SpaceSensor, target, TARGETS[kind])
        assert isinstance(bay, SpaceSensor)
        bay.occupied = True
        bay.base_event_rate_s = 0.0
        plate = make_plate(rng)
        gates = sorted(b.device.id for b in behaviours.values() if b.device.type is DeviceType.VEHICLE_GATE)
        if not gates:
            raise IncidentError("a zombie car needs a simulated vehicle_gate for its last 'in' read")
        days = 35
        extra.append(
            (
                gates[0],
                (
                    0,
                    Channel.EVENT,
                    {
                        "ts": now_ms - days * DAY_MS,
                        "type": "plate_read",
                        "plate": plate,
                        "direction": "in",
                        "confidence": 0.97,
                    },
                ),
            )
        )
        return (
            f"zombie car {plate}: in through {gates[0]} {days} days ago, parked on {bay.device.id}",
            extra,
            [bay.device.id],
        )
    if kind is IncidentKind.SMOKE_ALARM:
        sensor = _pick(behaviours, rng, SmokeSensor, target, TARGETS[kind])
        assert isinstance(sensor, SmokeSensor)
        sensor.alarm(now_ms)
        return (
            f"smoke alarm on {sensor.device.id} (unit {sensor.device.unit}, floor {sensor.device.floor})",
            extra,
            [sensor.device.id],
        )
    if kind is IncidentKind.SOS:
        radio = _pick(behaviours, rng, Radio, target, TARGETS[kind])
        assert isinstance(radio, Radio)
        radio.sos_at_ms = now_ms
        return f"SOS from {radio.device.id}", extra, [radio.device.id]
    device = _pick(behaviours, rng, Behaviour, target, TARGETS[kind])
    device.silent = True
    return f"{device.device.id} goes silent (connected, sends nothing)", extra, []
