"""Field types and base models shared by every device type's payloads.

Every model is strict (no type coercion), forbids unknown fields and rejects NaN and infinity,
so what validates here can be written to InfluxDB without further checks.
"""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from devices.ids import Id
from devices.plates import MAX_RAW as MAX_RAW_PLATE
from devices.plates import canonical as canonical_plate
from devices.plates import is_plate

# 2000-01-01 .. 2100-01-01: anything outside is a clock fault, not a reading.
TS_MIN_MS = 946_684_800_000
TS_MAX_MS = 4_102_444_800_000
# 2**53 keeps seq exact in JavaScript and in InfluxDB's float-typed tooling.
SEQ_MAX = 2**53

TimestampMs = Annotated[int, Field(ge=TS_MIN_MS, le=TS_MAX_MS, description="milliseconds since the Unix epoch, UTC")]
Seq = Annotated[int, Field(ge=0, le=SEQ_MAX, description="per-device counter, +1 per reading")]
Percent = Annotated[float, Field(ge=0, le=100)]
RssiDbm = Annotated[float, Field(ge=-150, le=0, description="received signal strength, dBm")]
TempC = Annotated[float, Field(ge=-50, le=300)]
VoltageV = Annotated[float, Field(ge=0, le=1000)]
CurrentA = Annotated[float, Field(ge=0, le=1000)]
PowerW = Annotated[float, Field(ge=0, le=1_000_000)]
EnergyWh = Annotated[float, Field(ge=0, le=1e12)]
Confidence = Annotated[float, Field(ge=0, le=1)]
DurationS = Annotated[float, Field(ge=0, le=86_400 * 365)]
ZoneId = Id
# An opaque reference the vendor maps to a card, face or code: never a name or a number.
CredentialRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
FaultCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


def _canonical_plate(value: object) -> object:
    """Plates as cameras send them (苏C·A1200, 苏C A1200, full width, lower case) to one form: 苏CA1200.
    Anything else goes on to the checks below as it is, and fails there."""
    if isinstance(value, str) and len(value) <= MAX_RAW_PLATE:
        return canonical_plate(value)
    return value


def _mainland_plate(value: str) -> str:
    if not is_plate(value):
        raise ValueError("not a mainland plate (province, office letter, 5 or 6 characters, a suffix, or 应急)")
    return value


# Mainland plates, stored canonical (devices/plates.py): ordinary, new-energy, suffixed, emergency.
Plate = Annotated[
    str,
    BeforeValidator(_canonical_plate),
    AfterValidator(_mainland_plate),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 7,
            "maxLength": MAX_RAW_PLATE,
            "description": "a mainland plate: 苏C12345, 苏CD12345, 苏C1234警, 苏C1234应急; separator dots, spaces, "
            "full-width characters and lower case are accepted and stored canonically (苏C·A1200 is 苏CA1200)",
        }
    ),
]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)


class Reading(Payload):
    """What every telemetry and event object carries."""

    ts: TimestampMs
    seq: Seq


class Heartbeat(Reading):
    """Telemetry of devices whose only periodic report is that they are alive."""

    uptime_s: DurationS
    rssi_dbm: RssiDbm | None = None


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(Payload):
    """Retained on the status channel; ``offline`` is the device's last will (sent with no fresh ts)."""

    state: DeviceState
    ts: TimestampMs


class TamperEvent(Reading):
    type: Literal["tamper"]
