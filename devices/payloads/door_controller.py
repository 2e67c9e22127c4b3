from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from devices.payloads.common import CredentialRef, DurationS, Heartbeat, Reading, TamperEvent


class DoorState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class AccessMethod(StrEnum):
    CARD = "card"
    FACE = "face"
    QR = "qr"
    PASSWORD = "password"


class Telemetry(Heartbeat):
    door: DoorState


class Access(Reading):
    type: Literal["access"]
    method: AccessMethod
    granted: bool
    credential: CredentialRef | None = None


class DoorOpened(Reading):
    type: Literal["door_opened"]


class DoorClosed(Reading):
    type: Literal["door_closed"]


class HeldOpen(Reading):
    type: Literal["held_open"]
    open_s: DurationS


class ForcedOpen(Reading):
    type: Literal["forced_open"]


class Tailgating(Reading):
    type: Literal["tailgating"]
    persons: int = Field(ge=2, le=50, description="people who passed on one credential")


Event = Annotated[
    Access | DoorOpened | DoorClosed | HeldOpen | ForcedOpen | Tailgating | TamperEvent,
    Field(discriminator="type"),
]
