"""Rules configuration: the shipped defaults, a file of the user's on top, per site/zone/device overrides.

A bad file fails at start with the line of the offending entry.
"""

import datetime as dt
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.estate import LocalTime, in_window
from devices.ids import Id
from devices.plates import canonical, is_plate

DEFAULTS = Path(__file__).with_name("defaults.yaml")


class ConfigError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Night(_Model):
    start: LocalTime
    end: LocalTime

    def contains(self, local: dt.time) -> bool:
        return in_window(self.start, self.end, local)


class Rule(_Model):
    enabled: bool = True


def _plate(value: str) -> str:
    """A plate as an engineer writes it (any of the forms cameras send), compared canonically."""
    plate = canonical(value)
    if not is_plate(plate):
        raise ValueError(f"{value!r} is not a mainland plate")
    return plate


PlateText = Annotated[str, AfterValidator(_plate)]


class ChargerOvertemp(Rule):
    threshold_c: float = Field(70, ge=20, le=200)
    clear_below_c: float = Field(65, ge=0, le=200)


class ChargerOverload(Rule):
    stops_per_night: int = Field(2, ge=1, le=100)


class DoorHeldOpen(Rule):
    min_open_s: float = Field(120, ge=1, le=86_400)


class QuietWindow(_Model):
    devices: list[str]
    start: LocalTime
    end: LocalTime

    def covers(self, device: str, local: dt.time) -> bool:
        return device in self.devices and in_window(self.start, self.end, local)


class FlyingLead(Rule):
    baseline_max_w: float = Field(50, ge=0, le=10_000)
    step_min_w: float = Field(60, ge=1, le=10_000)
    step_max_w: float = Field(700, ge=1, le=100_000)
    hold_min: float = Field(10, ge=1, le=600)
    clear_min: float = Field(5, ge=1, le=600)
    # A reading or two off the step (or off the baseline, while clearing) shorter than this does not
    # restart the hold (or the clear): a kettle on the same circuit, a meter's glitch.
    dropout_min: float = Field(2, ge=0, le=60)
    ebike_window_min: float = Field(120, ge=0, le=1440)
    whitelist: list[str] = Field(default_factory=list)
    schedules: list[QuietWindow] = Field(default_factory=list)


class Permit(_Model):
    plate: PlateText
    zone: str | None = None
    start: dt.datetime
    end: dt.datetime

    def allows(self, plate: str, zone: str, at: dt.datetime) -> bool:
        return self.plate == plate and self.zone in (None, zone) and self.start <= at < self.end


class FireLane(Rule):
    voice_after_s: float = Field(90, ge=0, le=86_400)
    alert_after_s: float = Field(300, ge=0, le=86_400)
    escalate_after_s: float = Field(1200, ge=0, le=86_400)
    clear_after_s: float = Field(120, ge=1, le=86_400)
    # A clear spell shorter than this does not restart a block's onset (a flickering sensor).
    dropout_s: float = Field(60, ge=0, le=3600)
    exempt_plates: list[PlateText] = Field(default_factory=list)
    # Emergency-service (应急) and police (警) vehicles never count as blocking.
    exempt_services: bool = True
    permits: list[Permit] = Field(default_factory=list)
    # No longer used: stages are measured from the block's onset (dropout_s is the tolerance).
    occupied_share: float | None = Field(None, gt=0, le=1, deprecated="stages are timed from onset; see dropout_s")

    @model_validator(mode="after")
    def _dropout_below_clear(self) -> Self:
        if self.dropout_s >= self.clear_after_s:
            raise ValueError("dropout_s must be shorter than clear_after_s (a block would resolve inside a dropout)")
        return self


class Absence(_Model):
    """An owner's declared long absence: the car stays parked on purpose, it is not abandoned."""

    plate: PlateText
    start: dt.date
    end: dt.date

    def covers(self, plate: str, day: dt.date) -> bool:
        return self.plate == plate and self.start <= day <= self.end


class ZombieCar(Rule):
    watch_days: float = Field(15, ge=0.01, le=3650)
    alert_days: float = Field(30, ge=0.01, le=3650)
    critical_days: float = Field(90, ge=0.01, le=3650)
    history_days: float = Field(120, ge=1, le=3650)
    absences: list[Absence] = Field(default_factory=list)


class DeviceSilent(Rule):
    intervals: float = Field(3, ge=1, le=1000)


class InvalidPayloads(Rule):
    clear_after_min: float = Field(30, ge=1, le=10_080)


class Rules(_Model):
    device_silent: DeviceSilent = DeviceSilent()
    invalid_payloads: InvalidPayloads = InvalidPayloads()
    flying_lead: FlyingLead = FlyingLead()
    fire_lane: FireLane = FireLane()
    zombie_car: ZombieCar = ZombieCar()
    fire: Rule = Rule()
    smoke_maintenance: Rule = Rule()
    sos: Rule = Rule()
    charger_overtemp: ChargerOvertemp = ChargerOvertemp()
    charger_fault: Rule = Rule()
    charger_overload: ChargerOverload = ChargerOverload()
    door_held_open: DoorHeldOpen = DoorHeldOpen()
    door_forced: Rule = Rule()
    tailgating: Rule = Rule()


class Match(_Model):
    site: str | None = None
    zone: str | None = None
    building: str | None = None
    device: str | None = None

    @property
    def specificity(self) -> int:
        return sum(4 if k == "device" else 2 if k == "zone" else 1 for k, v in self if v is not None)


class Override(_Model):
    match: Match
    rules: dict[str, dict[str, Any]]


class ChannelKind(StrEnum):
    WECOM = "wecom"
    DINGTALK = "dingtalk"
    WEBHOOK = "webhook"


def _from_env(value: str | None) -> str | None:
    """``env:NAME`` reads a secret from the environment, so rules files can be committed."""
    if value is None or not value.startswith("env:"):
        return value
    name = value[4:]
    found = os.environ.get(name)
    if found is None:
        raise ValueError(f"environment variable {name} is not set")
    return found


Secret = Annotated[str | None, AfterValidator(_from_env)]


class NotifyChannel(_Model):
    """A robot in a grid's WeCom or DingTalk group, or a JSON webhook."""

    name: Id
    kind: ChannelKind
    url: Secret
    secret: Secret = None  # DingTalk's signing secret
    grids: list[str] = Field(default_factory=list)  # empty: every grid, and alerts without one
    min_severity: Literal["info", "warning", "critical"] = "warning"
    per_minute: float = Field(20, gt=0, le=10_000)  # the robots' limit is about 20 a minute
    fold_after: int = Field(3, ge=1, le=1000)  # more than this waiting at once: one summary


class Notify(_Model):
    page_url: str | None = None  # the grid workers' page, linked from every message
    channels: list[NotifyChannel] = Field(default_factory=list)
    # Seconds after opening, per severity, at which an unacknowledged alert escalates a level...
    ack_timeouts_s: dict[str, list[float]] = Field(
        default_factory=lambda: {"critical": [180.0, 900.0], "warning": [1800.0], "info": []}
    )
    # ...and the contact roles each level reaches.
    ack_escalate_to: list[str] = Field(default_factory=lambda: ["property_manager", "community_police"])


class RulesConfig(_Model):
    lateness_s: float = Field(120, ge=0, le=86_400)
    future_s: float = Field(300, ge=0, le=86_400)
    notify: Notify = Notify()
    night: Night = Night(start=dt.time(18), end=dt.time(7))
    rules: Rules = Rules()
    overrides: list[Override] = Field(default_factory=list)

    def for_device(self, site: str, device: str, zone: str | None, building: str | None) -> Rules:
        """The rules as they apply to one device: defaults, then matching overrides, most specific last."""
        matching = [
            o
            for o in self.overrides
            if (o.match.site in (None, site))
            and (o.match.device in (None, device))
            and (o.match.zone in (None, zone))
            and (o.match.building in (None, building))
        ]
        if not matching:
            return self.rules
        merged = self.rules.model_dump()
        for o in sorted(matching, key=lambda o: o.match.specificity):
            for rule, values in o.rules.items():
                merged[rule] = {**merged[rule], **values}
        return Rules.model_validate(merged)

    @classmethod
    def load(cls, path: Path | None = None, runtime: dict[str, Any] | None = None) -> Self:
        """The shipped defaults, with ``path`` (if given) merged over them, then the settings engineers
        change at run time (the registry's, through the API): their lists add to the file's."""
        data = _read(DEFAULTS)
        if path is not None:
            data = _merge(data, _read(path))
        if runtime:
            data = _extend(data, runtime)
        try:
            config = cls.model_validate(data)
            for o in config.overrides:  # an override must itself make valid rules
                Rules.model_validate(_merge(config.rules.model_dump(), o.rules))
        except ValidationError as exc:
            raise ConfigError(_describe(exc, path or DEFAULTS)) from None
        return config


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rules config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: line 1: the rules config must be a mapping")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _extend(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = _extend(old, value)
        elif isinstance(value, list) and isinstance(old, list):
            out[key] = old + value
        else:
            out[key] = value
    return out


def _line_of(path: Path, loc: tuple[int | str, ...]) -> int | None:
    """The line of the YAML node at ``loc`` (or its nearest parent that exists in the file)."""
    try:
        node: yaml.Node | None = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = node.start_mark.line + 1 if node else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1  # the key's line: where the reader looks
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: not a valid rules config:"]
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        line = _line_of(path, err["loc"])
        lines.append(f"  line {line}: {where}: {err['msg']}" if line else f"  {where}: {err['msg']}")
    return "\n".join(lines)
