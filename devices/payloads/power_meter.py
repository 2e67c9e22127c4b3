from typing import Annotated

from pydantic import Field

from devices.payloads.common import CurrentA, EnergyWh, PowerW, Reading, VoltageV


class Telemetry(Reading):
    power_w: PowerW
    voltage_v: VoltageV
    current_a: CurrentA
    energy_wh: EnergyWh = Field(description="meter register, monotonic")
    power_factor: Annotated[float, Field(ge=0, le=1)] | None = None
