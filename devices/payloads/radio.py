from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import DurationS, Percent, Reading

Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


class Telemetry(Reading):
    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Field(ge=0, le=100_000)]
    speed_m_s: Annotated[float, Field(ge=0, le=100)]
    battery_pct: Percent


class PushToTalk(Reading):
    type: Literal["ptt"]
    talk_s: DurationS
    channel: Annotated[int, Field(ge=1, le=999)]


class Sos(Reading):
    type: Literal["sos"]
    lat: Latitude
    lon: Longitude


Event = Annotated[PushToTalk | Sos, Field(discriminator="type")]
