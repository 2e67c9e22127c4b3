"""Request and response bodies (the OpenAPI document's schemas)."""

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from devices.ids import Id
from devices.types import DeviceType

Label = Annotated[str, Field(min_length=1, max_length=120)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="short and stable, for programs")
    message: str = Field(description="for people")
    detail: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Every route can answer these; documented once, on every router.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("the body is not JSON"),
    401: _error("no token, or an unknown or revoked one"),
    403: _error("the token's role may not do this"),
    404: _error("not found, or not yours to see"),
    409: _error("conflicts with the current state (exists already, wrong state)"),
    422: _error("a parameter or the body is not valid"),
    503: _error("the broker or InfluxDB is away; retry"),
}


class DeviceIn(_Model):
    site: Id
    id: Id = Field(description="unique per site; lower-case letters, digits, '-' and '_' (no MQTT wildcards)")
    type: DeviceType
    building: Id | None = None
    unit: Id | None = None
    floor: int | None = Field(None, ge=-5, le=200)
    zone: Id | None = None
    interval_s: int | None = Field(None, ge=1, le=86_400, description="reporting interval; default: the type's")
    label: Label | None = None
    vendor: Id | None = Field(None, description="admins only; a vendor token registers as its own vendor")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"site": "luedi-south", "id": "smk-b001-u1-101", "type": "smoke_sensor",
                          "building": "b001", "unit": "b001-u1", "floor": 1}]
        },
    )


class DeviceOut(BaseModel):
    """The registry's record of a device (store/devices.py's DeviceRecord, field for field: tested),
    its broker user, and what the API knows of its traffic. Spelled out: this is the wire contract."""

    site: str
    id: str
    type: DeviceType
    building: str | None
    unit: str | None
    floor: int | None
    zone: str | None
    grid: str | None
    interval_s: int
    vendor: str | None
    label: str | None
    enabled: bool
    mqtt_username: str | None
    status: Literal["online", "offline", "never_seen", "disabled"]
    last_seen_ms: int | None


class Credentials(BaseModel):
    """Shown once: the password is not stored in clear anywhere."""

    username: str
    client_id: str = Field(description="the device must connect with exactly this client id")
    password: str
    publish_under: str = Field(description="topics the device may publish to: <this>/telemetry, /event, /status")
    subscribe: str = Field(description="the device's command topic")


class DeviceCreated(BaseModel):
    device: DeviceOut
    credentials: Credentials


class DevicePatch(_Model):
    enabled: bool


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ReadingsIn(_Model):
    channel: Literal["telemetry", "event"] = "telemetry"
    readings: list[dict[str, Any]] = Field(min_length=1, max_length=1000)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"channel": "telemetry", "readings": [
                {"ts": 1764547200000, "seq": 1, "state": "normal", "smoke_obscuration_pct": 0.1, "temp_c": 21.5,
                 "battery_pct": 88, "rssi_dbm": -71}]}]
        },
    )


class Rejected(BaseModel):
    index: int
    reason: str
    detail: str


class ReadingsResult(BaseModel):
    accepted: int
    rejected: list[Rejected]


class Note(_Model):
    note: str | None = Field(None, max_length=1000)


class Assign(_Model):
    assignee: Id | None = Field(description="a worker id, or null to unassign")


class TokenIn(_Model):
    role: Literal["admin", "engineer", "vendor", "grid_worker"]
    name: Label
    grids: list[Id] = Field(default_factory=list, max_length=100)
    vendor: Id | None = None
    expires_days: int | None = Field(90, ge=1, le=3650, description="days it is valid; null: never (admin only)")


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    grids: list[str]
    vendor: str | None
    created_ms: int
    expires_ms: int | None = Field(description="when it stops working; null: never")
    last_used_ms: int | None = Field(description="its last use, to the minute; null: never used")
    token: str | None = Field(None, description="only when created: keep it, it is not shown again")
