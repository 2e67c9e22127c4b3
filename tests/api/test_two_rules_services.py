"""Two real rules services (`estatewatch rules run`, two processes, each its own broker session) on
one registry during a fire in building b001, while a grid worker acknowledges through the API:
one alert per smoke sensor, each robot message delivered once. On SQLite and PostgreSQL."""

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from devices.estate import Estate
from devices.types import DeviceType
from rules.settings import RulesSettings
from stack.procs import free_port
from store.registry.db import Registry
from store.registry.schema import AlertEventRow, AlertRow
from tests.support.api import RunningApi, Tokens
from tests.support.http_recorder import Recorder, http_recorder
from tests.support.ingest import eventually, until
from tests.support.rules import Device, rules_settings
from tests.support.servers import Broker, InfluxServer

pytestmark = pytest.mark.both_registries

ALARM = {"type": "alarm", "smoke_obscuration_pct": 12.0, "temp_c": 40.0}


def as_env(settings: RulesSettings) -> dict[str, str]:
    return {f"ESTATEWATCH_{name.upper()}": str(getattr(settings, name)) for name in settings.model_fields_set}


def start_rules(settings: RulesSettings, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "estatewatch", "rules", "run"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env={**os.environ, **as_env(settings)}, stdout=out, stderr=subprocess.STDOUT)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def hook() -> Iterator[Recorder]:
    with http_recorder() as recorder:
        yield recorder


async def test_two_rules_services_raise_each_fire_once_and_send_each_message_once(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path, small: Estate,
    hook: Recorder, api: RunningApi, tokens: Tokens,
) -> None:  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    ports = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        port = free_port()
        settings = rules_settings(broker, influxd.url, influx_db, registry_url, tmp_path / name, small, hook.url,
                                  rules_client_id=f"rules-{name}", rules_metrics_port=port)  # fmt: skip
        procs.append(start_rules(settings, tmp_path / f"rules-{name}.log"))
        ports.append(port)
    devices = Device(broker, small.site.id)
    try:
        assert await eventually(lambda: all(healthy(p) for p in ports), 60), [p.poll() for p in procs]
        smoke = [d.id for d in small.devices if d.type is DeviceType.SMOKE_SENSOR and d.building == "b001"]
        now = int(time.time() * 1000)
        acked: Counter[int] = Counter()
        async with Registry(registry_url) as reg, api.client(tokens.engineer) as c:

            async def open_ids() -> list[int]:
                async with reg.session() as s:
                    return list((await s.scalars(select(AlertRow.id).where(AlertRow.state == "open"))).all())

            async def some_open() -> bool:
                return len(await open_ids()) >= 3

            for round_ in range(6):  # the fire spreads: every sensor alarms again and again
                for n, device in enumerate(smoke):
                    await asyncio.to_thread(devices.send, "smoke_sensor", device, "event",
                                            ts=now + round_ * 1000 + n, **ALARM)  # fmt: skip
                if round_ == 0:  # the grid worker acts while the later rounds pour in
                    assert await until(some_open, 30)
                for alert_id in (await open_ids())[:3]:
                    r = await c.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "on my way"})
                    acked[r.status_code] += 1

            async def settled() -> bool:
                async with reg.session() as s:
                    rows = (await s.scalars(select(AlertRow).where(AlertRow.rule == "fire"))).all()
                return len(rows) == len(smoke) and all(r.count == 6 for r in rows)

            assert await until(settled, 30)
            async with reg.session() as s:
                alerts = (await s.scalars(select(AlertRow).where(AlertRow.rule == "fire"))).all()
                events = (await s.scalars(select(AlertEventRow))).all()
        assert all(p.poll() is None for p in procs), "both services still run"
    finally:
        devices.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    logs = "\n".join((tmp_path / f"rules-{n}.log").read_text()[-2000:] for n in ("a", "b"))
    assert all(p.returncode == 0 for p in procs), logs

    assert sorted(a.subject for a in alerts) == sorted(smoke), "one alert per sensor, though both services saw it all"
    opened = Counter(e.alert_id for e in events if e.action == "opened")
    assert set(opened.values()) == {1}
    assert sum(1 for e in events if e.action == "acknowledged") == acked[200] > 0
    # Each robot message once: every delivery has its own idempotency key, and each fire was told.
    assert await eventually(lambda: {a["subject"] for r in hook.requests for a in r.body["alerts"]} >= set(smoke), 20)
    keys = Counter(r.body["idempotency_key"] for r in hook.requests)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
