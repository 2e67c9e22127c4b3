from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import Percent, Reading, RssiDbm


class Telemetry(Reading):
    """Also the sensor's heartbeat."""

    occupied: bool
    battery_pct: Percent
    rssi_dbm: RssiDbm | None = None


class Occupied(Reading):
    type: Literal["occupied"]


class Freed(Reading):
    type: Literal["freed"]


Event = Annotated[Occupied | Freed, Field(discriminator="type")]
