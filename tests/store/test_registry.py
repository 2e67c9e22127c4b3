import json
import subprocess
import sys
from pathlib import Path

import pytest

from devices.estate import Estate, dump_estate
from devices.types import DeviceType
from store.registry.db import Registry

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


async def test_load_is_idempotent_and_reports_changes(blank_registry_url: str, small: Estate) -> None:
    async with Registry(blank_registry_url) as reg:
        first = await reg.load_estate(small)
        again = await reg.load_estate(small)
        assert (first.devices_added, first.devices_unchanged) == (len(small.devices), 0)
        assert (again.devices_added, again.devices_updated, again.devices_unchanged) == (0, 0, len(small.devices))
        moved = small.model_copy(
            update={"devices": [small.devices[0].model_copy(update={"floor": 5}), *small.devices[2:]]}
        )
        third = await reg.load_estate(moved)
        assert (third.devices_updated, third.devices_kept) == (1, 1)
        devices = await reg.devices()
        assert len(devices) == len(small.devices)  # the dropped one is kept, not deleted


async def test_devices_carry_their_grid(blank_registry_url: str, small: Estate) -> None:
    async with Registry(blank_registry_url) as reg:
        await reg.load_estate(small)
        index = await reg.device_index()
        cams = await reg.devices(device_type=DeviceType.CAMERA)
    fire_lane_cam = index[("small", DeviceType.CAMERA, "cam-fl-01")]
    assert fire_lane_cam.zone == "fl-01"
    assert fire_lane_cam.grid == next(z.grid for z in small.zones if z.id == "fl-01")
    smoke = next(d for d in index.values() if d.type is DeviceType.SMOKE_SENSOR)
    assert smoke.grid == next(b.grid for b in small.buildings if b.id == smoke.building)
    assert {c.type for c in cams} == {DeviceType.CAMERA}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "estatewatch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_cli_registry_init_and_devices_list(tmp_path: Path, small: Estate, blank_registry_url: str) -> None:
    estate_file = tmp_path / "small.yaml"
    estate_file.write_text(dump_estate(small), encoding="utf-8")
    db = blank_registry_url
    init = run_cli("registry", "init", "--estate", str(estate_file), "--db-url", db)
    assert init.returncode == 0, init.stderr
    assert f"{len(small.devices)} devices added" in init.stdout
    again = run_cli("registry", "init", "--estate", str(estate_file), env={"ESTATEWATCH_DB_URL": db})
    assert f"0 devices added, 0 updated, {len(small.devices)} unchanged" in again.stdout
    listed = run_cli("devices", "list", "--json", "--db-url", db)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == len(small.devices)
    assert {"id", "type", "site", "building", "unit", "zone"} <= rows[0].keys()
    assert {r["id"] for r in rows} == {d.id for d in small.devices}


def test_cli_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = run_cli("devices", "list", env={"ESTATEWATCH_DB_URL": "mysql://x"})
    assert result.returncode == 2
    assert "ESTATEWATCH_DB_URL (--db-url)" in result.stderr
    result = run_cli("simulate", "--mqtt-url", "http://broker:1883", "--duration", "0")
    assert result.returncode == 2
    assert "ESTATEWATCH_MQTT_URL (--mqtt-url): Value error, must start with mqtt://" in result.stderr


def test_cli_bad_estate_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: [")
    result = run_cli("registry", "init", "--estate", str(bad), "--db-url", f"sqlite+aiosqlite:///{tmp_path}/r.db")
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


async def test_two_services_writing_the_same_new_rows_at_once_both_succeed(blank_registry_url: str) -> None:
    """Two rules services checkpoint (and two engineers set) a key neither has written yet: on
    PostgreSQL both inserts race, the loser retries as an update; nothing fails."""
    import asyncio

    from store.checkpoints import Checkpoints
    from store.estate_settings import EstateSettings

    async with Registry(blank_registry_url) as one, Registry(blank_registry_url) as other:
        for n in range(10):
            await asyncio.gather(Checkpoints(one).put("small", f"k{n}", {"by": "one"}),
                                 Checkpoints(other).put("small", f"k{n}", {"by": "other"}),
                                 EstateSettings(one).put("small", f"s{n}", [1], "one"),
                                 EstateSettings(other).put("small", f"s{n}", [2], "other"))  # fmt: skip
            assert (await Checkpoints(one).get("small", f"k{n}")) in ({"by": "one"}, {"by": "other"})
