"""Every device type's payload models and reporting defaults, and the one parser for device payloads."""

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from devices.payloads import (
    camera,
    door_controller,
    ev_charger,
    power_meter,
    radio,
    smoke_sensor,
    space_sensor,
    vehicle_gate,
)
from devices.payloads.common import Reading, Status
from devices.types import Channel, DeviceType

MAX_BATCH = 1000
MAX_PAYLOAD_BYTES = 256 * 1024


class PayloadError(ValueError):
    """A payload that does not follow the protocol; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Adapters:
    one: TypeAdapter[Any]
    batch: TypeAdapter[Any] | None

    @classmethod
    def for_model(cls, model: Any, batch: bool = True) -> "_Adapters":
        many = Annotated[list[model], Field(min_length=1, max_length=MAX_BATCH)]
        return cls(TypeAdapter(model), TypeAdapter(many) if batch else None)


@dataclass(frozen=True)
class DeviceSpec:
    device_type: DeviceType
    telemetry: type[Reading]
    event: Any
    interval_s: int
    description: str
    _adapters: dict[Channel, _Adapters] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adapters = {
            Channel.TELEMETRY: _Adapters.for_model(self.telemetry),
            Channel.STATUS: _Adapters.for_model(Status, batch=False),
        }
        if self.event is not None:
            adapters[Channel.EVENT] = _Adapters.for_model(self.event)
        object.__setattr__(self, "_adapters", adapters)

    def event_models(self) -> tuple[type[Reading], ...]:
        if self.event is None:
            return ()
        union = self.event.__origin__ if hasattr(self.event, "__metadata__") else self.event
        return tuple(getattr(union, "__args__", (union,)))

    def adapter(self, channel: Channel, batch: bool = False) -> TypeAdapter[Any]:
        adapters = self._adapters.get(channel)
        if adapters is None:
            raise PayloadError("bad_channel", f"{self.device_type} has no {channel} channel")
        if not batch:
            return adapters.one
        if adapters.batch is None:
            raise PayloadError("schema", f"the {channel} channel takes one object, not an array")
        return adapters.batch


CATALOG: dict[DeviceType, DeviceSpec] = {
    spec.device_type: spec
    for spec in (
        DeviceSpec(
            DeviceType.DOOR_CONTROLLER,
            door_controller.Telemetry,
            door_controller.Event,
            60,
            "unit-door and pedestrian-gate access controller (card, face, QR, password)",
        ),
        DeviceSpec(
            DeviceType.VEHICLE_GATE,
            vehicle_gate.Telemetry,
            vehicle_gate.Event,
            60,
            "vehicle barrier with plate recognition",
        ),
        DeviceSpec(
            DeviceType.EV_CHARGER,
            ev_charger.Telemetry,
            ev_charger.Event,
            60,
            "e-bike / EV charging pile, reporting per port",
        ),
        DeviceSpec(
            DeviceType.SMOKE_SENSOR,
            smoke_sensor.Telemetry,
            smoke_sensor.Event,
            300,
            "household smoke sensor (NB-IoT class)",
        ),
        DeviceSpec(
            DeviceType.CAMERA, camera.Telemetry, camera.Event, 60, "camera analytics point (zones, plates, e-bikes)"
        ),
        DeviceSpec(
            DeviceType.POWER_METER, power_meter.Telemetry, None, 60, "corridor or household circuit power meter"
        ),
        DeviceSpec(
            DeviceType.SPACE_SENSOR,
            space_sensor.Telemetry,
            space_sensor.Event,
            120,
            "parking-bay or fire-lane space sensor",
        ),
        DeviceSpec(DeviceType.RADIO, radio.Telemetry, radio.Event, 10, "staff walkie-talkie with GPS"),
    )
}


# The validators behind the adapters, by (type, channel, batch): every message of every service
# looks one up, so it is one dictionary probe rather than two method calls.
_VALIDATORS: dict[tuple[DeviceType, Channel, bool], Any] = {
    (t, ch, batch): spec.adapter(ch, batch).validator
    for t, spec in CATALOG.items()
    for ch, adapters in spec._adapters.items()
    for batch in (False, True)
    if not batch or adapters.batch is not None
}


def parse_payload(device_type: DeviceType, channel: Channel, raw: bytes) -> list[Reading] | Status:
    """Validate one MQTT payload; a batch comes back as a list, a single reading as a list of one."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    # Choosing the shape first keeps the error about what was sent, not about the other shape.
    lead = raw[:1]
    if lead in (b" ", b"\t", b"\r", b"\n"):
        lead = raw.lstrip()[:1]
    batch = lead == b"["
    validator = _VALIDATORS.get((device_type, channel, batch))
    if validator is None:  # no such channel, or an array where one object is due: the adapter says which
        CATALOG[device_type].adapter(channel, batch=batch)
        raise PayloadError("bad_channel", f"{device_type} has no {channel} channel")
    try:
        value = validator.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        reason = "bad_json" if first["type"] == "json_invalid" else "schema"
        where = ".".join(str(p) for p in first["loc"])
        raise PayloadError(reason, f"{where}: {first['msg']}" if where else first["msg"]) from None
    if isinstance(value, Status):
        return value
    return value if isinstance(value, list) else [value]
