"""Settings of ``estatewatch load``: where results go and how hard to push."""

from pathlib import Path

from pydantic import Field

from runtime.settings import Settings


class LoadSettings(Settings):
    load_results_dir: Path = Field(Path("results/load"), description="a folder per run goes here")
    load_processes: int = Field(2, ge=1, le=64, description="Locust processes (--processes); one per core")
    load_duration_s: float | None = Field(None, gt=0, description="seconds per scenario (default: the scenario's)")
    load_devices: int | None = Field(None, ge=1, description="play only this many of the estate's devices")
    load_spawn_rate: float = Field(400.0, gt=0, description="devices started per second at the beginning")
    load_engineers: int = Field(4, ge=0, description="engineers querying the API (grid workers: one per grid)")
    load_api: bool = Field(True, description="run the API and its users in the load")
    load_drain_s: float = Field(300.0, gt=0, description="after the run, how long to wait for ingest to store it")
