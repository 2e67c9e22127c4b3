"""The simulator's settings (``ESTATEWATCH_SIM_*``, flags generated like every other command's;
each also answers to its short historical flag, ``--speed`` for ``--sim-speed``)."""

from pathlib import Path

from pydantic import Field
from pydantic.config import JsonDict

from devices.types import DeviceType
from runtime.settings import Settings


def _also(flag: str) -> JsonDict:
    return {"flags": [flag]}


class SimSettings(Settings):
    sim_rate_scale: float = Field(1.0, gt=0, description="multiply every device's reporting and event rate",
                                  json_schema_extra=_also("--rate-scale"))  # fmt: skip
    sim_speed: float = Field(1.0, gt=0, description="estate seconds per real second (60 plays an hour a minute)",
                             json_schema_extra=_also("--speed"))  # fmt: skip
    sim_start: str | None = Field(None, description="estate clock at start, e.g. 2026-12-01T19:00+08:00 (default: now)",
                                  json_schema_extra=_also("--start"))  # fmt: skip
    sim_duration_s: float | None = Field(None, ge=0, description="stop after this many real seconds (default: never)",
                                         json_schema_extra=_also("--duration"))  # fmt: skip
    sim_seed: int = Field(1, description="same seed, same traffic", json_schema_extra=_also("--seed"))
    sim_incidents: list[str] = Field(
        default_factory=list,
        description="incidents to inject, KIND[:TARGET] (smoke_alarm, sos, blocked_fire_lane, ...); repeatable",
        json_schema_extra=_also("--incident"),
    )
    sim_processes: int = Field(1, ge=1, le=64, description="split the devices over this many processes",
                               json_schema_extra=_also("--processes"))  # fmt: skip
    sim_limit: int | None = Field(None, ge=1, description="simulate only N devices, a sample of every type",
                                  json_schema_extra=_also("--limit"))  # fmt: skip
    sim_types: list[DeviceType] = Field(
        default_factory=list, description="simulate only these device types; repeatable",
        json_schema_extra=_also("--type"),
    )  # fmt: skip
    sim_record: Path | None = Field(
        None, description="also write what is sent as JSON lines (the 'rules replay' format)",
        json_schema_extra=_also("--record"),
    )  # fmt: skip
    sim_device_credentials: Path | None = Field(
        None,
        description="JSON of each device's broker password by username (make up's .run/device-credentials.json): "
        "every device connects as itself",
        json_schema_extra=_also("--device-credentials"),
    )
    sim_offline: bool = Field(
        False,
        description="no broker and no clock: write the traffic of --duration seconds at --speed to --record at once",
        json_schema_extra=_also("--offline"),
    )
    sim_progress_every_s: float = Field(5.0, ge=0.1, description="seconds between progress lines",
                                        json_schema_extra=_also("--progress-every"))  # fmt: skip
