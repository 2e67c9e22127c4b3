"""What the platform says about devices on the broker, beside their own topics: dead letters (a
rejected message, with its reason) and noisy-device reports (a device past its reject budget).

Ingest publishes them; the rules engine reads the noisy reports (``invalid_payloads``); operators
may subscribe to both. Defined here, in the vocabulary, so both sides share one shape.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from devices.ids import ID_RE, Id
from devices.payloads.common import TimestampMs
from devices.topics import ROOT
from devices.types import DeviceType

REJECTS = "_rejects"
NOISY = "_noisy"  # never a reason: reasons are words without a leading underscore

Reason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")]


def dead_letter_topic(topic: str, reason: str) -> str:
    """``estate/v1/{site}/_rejects/{reason}``; site ``_invalid`` when the topic's own site is not an id."""
    parts = topic.split("/")
    site = parts[2] if len(parts) > 2 and parts[0:2] == ROOT.split("/") and ID_RE.fullmatch(parts[2]) else "_invalid"
    return f"{ROOT}/{site}/{REJECTS}/{reason}"


def noisy_topic(site: str) -> str:
    return f"{ROOT}/{site}/{REJECTS}/{NOISY}"


class NoisyDevice(BaseModel):
    """A registered device past its reject budget in one minute (``final``: the minute is over)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    ts: TimestampMs
    site: Id
    device_type: DeviceType
    device_id: Id
    window_start_ms: TimestampMs
    window_s: int = Field(60, ge=1)
    rejects: dict[Reason, Annotated[int, Field(ge=0)]]
    total: int = Field(ge=0)
    budget_per_min: int = Field(ge=1)
    final: bool
    quarantined: bool = False
    worker: str = Field(max_length=64)
