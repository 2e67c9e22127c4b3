"""Blocked fire lanes (消防通道占用): space sensors and zone cameras, staged warnings.

A zone counts as blocked for a stage when it was occupied for at least ``occupied_share`` of the
stage's window (time-weighted: sensors report irregularly). Stage 0 after 90 s is a voice warning on
the zone's camera speaker, stage 1 after 5 min alerts the zone's grid workers, stage 2 after 20 min
is critical and reaches the property manager. Exempt plates and permits never count as occupying.
Resolved after 2 minutes continuously clear. Stages are judged on every message's clock, so a quiet
sensor does not delay an escalation.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devices.estate import ZoneKind
from devices.types import Channel, DeviceType
from rules.alerts import Alert, Severity
from rules.config import FireLane as FireLaneRule
from rules.context import Context, Where

RULE = "fire_lane"
STAGES = (("voice", Severity.INFO), ("grid", Severity.WARNING), ("escalated", Severity.CRITICAL))


@dataclass
class Zone:
    where: Where
    sensors: dict[str, bool] = field(default_factory=dict)
    camera_occupied: bool = False
    plate: str | None = None
    samples: deque[tuple[int, bool]] = field(default_factory=lambda: deque(maxlen=5000))
    stage: int = -1
    clear_since: int | None = None

    def occupied(self, ctx: Context, rules: FireLaneRule, ts: int) -> bool:
        raw = any(self.sensors.values()) or self.camera_occupied
        if raw and self.plate is not None:
            local = ctx.local(ts)
            zone = self.where.zone or ""
            if self.plate in rules.exempt_plates or any(p.allows(self.plate, zone, local) for p in rules.permits):
                return False
        return raw

    def share(self, since: int, until: int) -> float:
        """Time-weighted share of [since, until] the zone was occupied; 0 if the samples start later."""
        if not self.samples or self.samples[0][0] > since or until <= since:
            return 0.0
        # Newest first, stopping at the window's start: the window is minutes, the deque hours.
        occupied_ms = 0
        t = until
        for ts, occ in reversed(self.samples):
            if ts >= until:
                continue
            start = max(ts, since)
            if occ:
                occupied_ms += t - start
            t = start
            if ts <= since:
                break
        return occupied_ms / (until - since)


class FireLanes:
    def __init__(self, ctx: Context, owner_of: Callable[[str], str | None] = lambda plate: None) -> None:
        self.zones: dict[str, Zone] = {}
        self._owner_of = owner_of
        self._lanes = {z.id for z in ctx.estate.zones if z.kind is ZoneKind.FIRE_LANE}
        self._speakers = {d.zone: d.id for d in ctx.estate.devices if d.type is DeviceType.CAMERA and d.zone}

    def handle(self, ctx: Context, where: Where, channel: Channel, reading: Any) -> None:
        zone_id = where.zone
        kind = where.device.type
        if kind is DeviceType.CAMERA and channel is Channel.EVENT and reading.type in ("zone_occupied", "zone_cleared"):
            zone_id = reading.zone
        if zone_id not in self._lanes:
            return
        zone = self.zones.get(zone_id)
        if zone is None:
            zone = self.zones[zone_id] = Zone(
                Where(where.site, where.device, where.grid, where.building, where.unit, zone_id)
            )
        if kind is DeviceType.SPACE_SENSOR:
            if channel is Channel.TELEMETRY:
                zone.sensors[where.device.id] = reading.occupied
            elif channel is Channel.EVENT:
                zone.sensors[where.device.id] = reading.type == "occupied"
        elif kind is DeviceType.CAMERA and channel is Channel.EVENT:
            if reading.type == "zone_occupied":
                zone.camera_occupied, zone.plate = True, reading.plate
            elif reading.type == "zone_cleared":
                zone.camera_occupied, zone.plate = False, None
        else:
            return
        rules = ctx.rules_for(zone.where).fire_lane
        zone.samples.append((reading.ts, zone.occupied(ctx, rules, reading.ts)))

    def adopt(self, alert: Alert) -> None:
        """An open alert from before a restart: its stage stands, and clearing resolves it."""
        zone = self.zones.get(alert.subject)
        if zone is not None:
            zone.stage = max(zone.stage, alert.escalation)

    def tick(self, ctx: Context, now: int) -> None:
        for zone_id, zone in self.zones.items():
            rules = ctx.rules_for(zone.where).fire_lane
            if not rules.enabled or not zone.samples:
                continue
            self._stage(ctx, zone_id, zone, rules, now)

    def _stage(self, ctx: Context, zone_id: str, zone: Zone, rules: FireLaneRule, now: int) -> None:
        thresholds = (rules.voice_after_s, rules.alert_after_s, rules.escalate_after_s)
        if not zone.samples[-1][1]:  # clear now: stages only climb while the lane is occupied
            if zone.stage >= 0:
                zone.clear_since = zone.clear_since or zone.samples[-1][0]
                if now - zone.clear_since >= rules.clear_after_s * 1000:
                    ctx.resolve(RULE, zone_id, now, {"ts": now, "clear_s": (now - zone.clear_since) / 1000})
                    zone.stage, zone.clear_since = -1, None
            return
        reached = -1
        for stage, after_s in enumerate(thresholds):
            if zone.share(now - int(after_s * 1000), now) < rules.occupied_share:
                break
            reached = stage
        zone.clear_since = None
        if reached <= zone.stage:
            return
        zone.stage = reached
        name, severity = STAGES[reached]
        speaker = self._speakers.get(zone_id)
        recipients = [f"speaker:{speaker}"] if speaker else []
        if reached >= 1:
            recipients += ctx.grid_workers(zone.where.grid, now)
        if reached >= 2:
            recipients += ctx.contacts("property_manager")
        evidence = {
            "ts": now,
            "stage": name,
            "plate": zone.plate,
            "owner_unit": self._owner_of(zone.plate) if zone.plate else None,
            "occupied_share": round(zone.share(now - int(thresholds[reached] * 1000), now), 2),
        }
        title = f"Fire lane {zone_id} blocked" + (f" by {zone.plate}" if zone.plate else "")
        if ctx.is_open(RULE, zone_id):
            ctx.note(
                RULE, zone_id, now, evidence, severity=severity, title=title, escalation=reached, recipients=recipients
            )
        else:
            ctx.open(RULE, zone_id, zone.where, severity, title, now, evidence, recipients, escalation=reached)
