from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import FaultCode, Percent, Reading, RssiDbm, TamperEvent, TempC

SmokeObscuration = Annotated[float, Field(ge=0, le=100, description="optical obscuration, %/m")]


class AlarmState(StrEnum):
    NORMAL = "normal"
    ALARM = "alarm"
    SILENCED = "silenced"
    FAULT = "fault"
    TAMPER = "tamper"
    TEST = "test"
    LOW_BATTERY = "low_battery"


class Telemetry(Reading):
    """Also the sensor's heartbeat."""

    state: AlarmState
    smoke_obscuration_pct: SmokeObscuration
    temp_c: TempC
    battery_pct: Percent
    rssi_dbm: RssiDbm


class Alarm(Reading):
    type: Literal["alarm"]
    smoke_obscuration_pct: SmokeObscuration
    temp_c: TempC


class AlarmCleared(Reading):
    type: Literal["alarm_cleared"]


class Silenced(Reading):
    type: Literal["silenced"]


class Fault(Reading):
    type: Literal["fault"]
    code: FaultCode


class SelfTest(Reading):
    type: Literal["test"]
    passed: bool


class LowBattery(Reading):
    type: Literal["low_battery"]
    battery_pct: Percent


Event = Annotated[
    Alarm | AlarmCleared | Silenced | Fault | SelfTest | LowBattery | TamperEvent,
    Field(discriminator="type"),
]
