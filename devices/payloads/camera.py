from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import Confidence, Heartbeat, Plate, Reading, ZoneId


class ObjectKind(StrEnum):
    CAR = "car"
    TRUCK = "truck"
    EBIKE = "ebike"
    BICYCLE = "bicycle"
    PERSON = "person"
    OTHER = "other"


class EbikeLocation(StrEnum):
    ENTRANCE = "entrance"
    LIFT = "lift"
    CORRIDOR = "corridor"


class Telemetry(Heartbeat):
    fps: Annotated[float, Field(ge=0, le=240)]
    stream_ok: bool


class ZoneOccupied(Reading):
    type: Literal["zone_occupied"]
    zone: ZoneId
    object_kind: ObjectKind
    plate: Plate | None = None
    confidence: Confidence


class ZoneCleared(Reading):
    type: Literal["zone_cleared"]
    zone: ZoneId


class EbikeDetected(Reading):
    """An e-bike carried into a building: the usual prelude to charging it indoors."""

    type: Literal["ebike_detected"]
    location: EbikeLocation
    confidence: Confidence


class PlateSighting(Reading):
    type: Literal["plate_sighting"]
    plate: Plate
    confidence: Confidence
    zone: ZoneId | None = None


Event = Annotated[
    ZoneOccupied | ZoneCleared | EbikeDetected | PlateSighting,
    Field(discriminator="type"),
]
