from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import Confidence, Heartbeat, Plate, Reading


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Barrier(StrEnum):
    UP = "up"
    DOWN = "down"


class Telemetry(Heartbeat):
    barrier: Barrier


class PlateRead(Reading):
    """A vehicle passed the gate; ``plate`` is null when the camera read no plate."""

    type: Literal["plate_read"]
    plate: Plate | None
    direction: Direction
    confidence: Confidence


Event = Annotated[PlateRead, Field(discriminator="type")]
