"""Blocked fire lanes (消防通道占用): space sensors and zone cameras, staged warnings.

Every stage is measured from the block's **onset**: the first sample (a space sensor's or the zone
camera's) that shows the lane occupied (``rules/episodes.py``). A clear spell shorter than
``dropout_s`` (60 s: a flickering sensor, a car shuffling) does not restart it; a longer one does.
Stage 0 at onset + 90 s is a voice warning on the zone's camera speaker, stage 1 at onset + 5 min
alerts the zone's grid workers, stage 2 at onset + 20 min is critical and reaches the property
manager: each fires on the first tick at or after its time while the lane is occupied, never before.
Exempt plates, permits and (by default) emergency-service and police vehicles never count as
occupying. Resolved after 2 minutes continuously clear. Stages are judged on the engine's clock,
which every message moves, so a quiet sensor does not delay an escalation.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices.alerts import Alert, Severity
from devices.estate import ZoneKind
from devices.plates import service_kind
from devices.types import Channel, DeviceType
from rules.config import FireLane as FireLaneRule
from rules.context import Context, Where
from rules.episodes import Timeline

RULE = "fire_lane"
STAGES = (("voice", Severity.INFO), ("grid", Severity.WARNING), ("escalated", Severity.CRITICAL))


@dataclass
class Zone:
    where: Where
    timeline: Timeline
    plate: str | None = None
    stage: int = -1
    exempt_seen: str | None = None  # the last exempt vehicle seen in the lane, for the evidence

    def exemption(self, ctx: Context, rules: FireLaneRule, ts: int) -> str | None:
        """Why the vehicle in the lane does not count as blocking it, if it does not."""
        if self.plate is None:
            return None
        if self.plate in rules.exempt_plates:
            return "exempt plate"
        zone = self.where.zone or ""
        if any(p.allows(self.plate, zone, ctx.local(ts)) for p in rules.permits):
            return "permit"
        kind = service_kind(self.plate)
        return kind if kind is not None and rules.exempt_services else None


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
            place = Where(where.site, where.device, where.grid, where.building, where.unit, zone_id)
            dropout_ms = int(ctx.rules_for(place).fire_lane.dropout_s * 1000)
            zone = self.zones[zone_id] = Zone(place, Timeline(dropout_ms))
        if kind is DeviceType.SPACE_SENSOR:
            if channel is Channel.TELEMETRY:
                raw = reading.occupied
            elif channel is Channel.EVENT:
                raw = reading.type == "occupied"
            else:
                return
            source = where.device.id
        elif kind is DeviceType.CAMERA and channel is Channel.EVENT:
            if reading.type == "zone_occupied":
                zone.plate, raw = reading.plate, True
            elif reading.type == "zone_cleared":
                zone.plate, raw = None, False
            else:
                return
            source = "camera"
        else:
            return
        rules = ctx.rules_for(zone.where).fire_lane
        why = zone.exemption(ctx, rules, reading.ts) if raw else None
        if why is not None:
            zone.exempt_seen = f"{zone.plate} ({why})"
            if source == "camera" and ctx.is_open(RULE, zone_id):  # the alert says who is there now
                ctx.note(RULE, zone_id, reading.ts, {"ts": reading.ts, "exempt_seen": zone.exempt_seen,
                                                     "counted_as_blocking": False})  # fmt: skip
        # Each source's own samples: the lane is occupied while any says so (an exempt vehicle does not).
        zone.timeline.observe(source, reading.ts, raw and why is None)

    def adopt(self, alert: Alert) -> None:
        """An open alert from before a restart: its stage stands, and clearing resolves it."""
        zone = self.zones.get(alert.subject)
        if zone is not None:
            zone.stage = max(zone.stage, alert.escalation)

    def tick(self, ctx: Context, now: int) -> None:
        for zone_id, zone in self.zones.items():
            rules = ctx.rules_for(zone.where).fire_lane
            if not rules.enabled or zone.timeline.empty:
                continue
            self._stage(ctx, zone_id, zone, rules, now)

    def _stage(self, ctx: Context, zone_id: str, zone: Zone, rules: FireLaneRule, now: int) -> None:
        thresholds = (rules.voice_after_s, rules.alert_after_s, rules.escalate_after_s)
        line = zone.timeline
        if not line.on:  # clear now: stages only climb while the lane is occupied
            clear_since = line.off_since
            if zone.stage >= 0 and clear_since is not None and now - clear_since >= rules.clear_after_s * 1000:
                ctx.resolve(RULE, zone_id, now, {"ts": now, "clear_s": (now - clear_since) / 1000})
                zone.stage = -1
            return
        onset = line.onset(now)
        if onset is None:
            return
        reached = max((i for i, after_s in enumerate(thresholds) if now >= onset + after_s * 1000), default=-1)
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
            "onset_ts": onset,
            "blocked_s": (now - onset) / 1000,
            "plate": zone.plate,
            "owner_unit": self._owner_of(zone.plate) if zone.plate else None,
        }
        if zone.exempt_seen:
            evidence["exempt_seen"] = zone.exempt_seen  # e.g. "苏C1234应急 (emergency)": not counted
        title = f"Fire lane {zone_id} blocked" + (f" by {zone.plate}" if zone.plate else "")
        if ctx.is_open(RULE, zone_id):
            ctx.note(
                RULE, zone_id, now, evidence, severity=severity, title=title, escalation=reached, recipients=recipients
            )
        else:
            ctx.open(RULE, zone_id, zone.where, severity, title, now, evidence, recipients, escalation=reached)
