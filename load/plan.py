"""What the orchestrator tells the Locust processes about a run, as ``plan.json`` in the run folder."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PLAN_FILE = "plan.json"


class RunPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    duration_s: float = Field(gt=0)
    estate_file: Path
    device_credentials: Path  # {username: password}, the broker's per-device clients
    mqtt_host: str
    mqtt_port: int
    influx_url: str
    influx_database: str
    api_url: str | None = None
    engineer_token: str | None = None
    grid_tokens: dict[str, str] = Field(default_factory=dict)  # grid id -> grid_worker token
    engineers: int = Field(4, ge=0)
    probe_device: str | None = None  # an extra device whose readings are timed to InfluxDB
    probe_interval_s: float = Field(1.0, gt=0)
    probe_timeout_s: float = Field(30.0, gt=0)
    spawn_rate: float = Field(400.0, gt=0)  # users started per second at the beginning
    seed: int = 1

    def write(self, folder: Path) -> Path:
        path = folder / PLAN_FILE
        path.write_text(self.model_dump_json(indent=1))
        path.chmod(0o600)  # tokens
        return path

    @classmethod
    def read(cls, folder: Path) -> "RunPlan":
        return cls.model_validate_json((folder / PLAN_FILE).read_text())
