from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import (
    CurrentA,
    EnergyWh,
    FaultCode,
    PowerW,
    Reading,
    TempC,
    VoltageV,
)

Port = Annotated[int, Field(ge=1, le=32, description="port number on the pile, from 1")]


class PortState(StrEnum):
    IDLE = "idle"
    CHARGING = "charging"
    FAULT = "fault"
    DISABLED = "disabled"


class StopReason(StrEnum):
    FULL = "full"
    UNPLUGGED = "unplugged"
    USER = "user"
    TIMEOUT = "timeout"
    OVERLOAD = "overload"
    OVER_TEMPERATURE = "over_temperature"
    FAULT = "fault"
    PAYMENT = "payment"


class Telemetry(Reading):
    """One port's reading; a pile reports its ports as a batch."""

    port: Port
    state: PortState
    voltage_v: VoltageV
    current_a: CurrentA
    power_w: PowerW
    energy_wh: EnergyWh = Field(description="session energy so far")
    temp_c: TempC


class SessionStart(Reading):
    type: Literal["session_start"]
    port: Port
    session_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SessionStop(Reading):
    type: Literal["session_stop"]
    port: Port
    session_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    reason: StopReason
    energy_wh: EnergyWh
    duration_s: Annotated[float, Field(ge=0, le=7 * 86_400)]


class Fault(Reading):
    type: Literal["fault"]
    port: Port
    code: FaultCode


Event = Annotated[SessionStart | SessionStop | Fault, Field(discriminator="type")]
