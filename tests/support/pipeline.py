from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.estate import Estate
from runtime.settings import parse_mqtt_url
from sim.incidents import Incident
from sim.runner import SimOptions, Simulator
from tests.support.ingest import IngestProcess, eventually, ingest_env, load_registry
from tests.support.servers import Broker, InfluxServer

Factory = Callable[..., IngestProcess]


@pytest.fixture
async def registry_url(blank_registry_url: str, small: Estate) -> str:
    return await load_registry(blank_registry_url, small)


@pytest.fixture
def ingest_factory(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path
) -> Iterator[Factory]:
    made: list[IngestProcess] = []

    def make(
        client_id: str = "ingest-1", influx_url: str | None = None, broker_: Broker | None = None, **extra: str
    ) -> IngestProcess:
        env = ingest_env(
            broker_ or broker, influx_url or influxd.url, influx_db, registry_url, tmp_path, client_id, **extra
        )
        proc = IngestProcess(env, tmp_path / f"{client_id}.log")
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


async def after_published(sim: Simulator, more: int, within_s: float = 30) -> None:
    """Wait until the simulator has published ``more`` messages beyond what it has now, so that a
    fault lands mid-stream because of what was sent rather than after a guessed number of seconds."""
    target = sim.stats.messages + more
    if not await eventually(lambda: sim.stats.messages >= target, within_s, every=0.02):
        raise AssertionError(f"the simulator published {sim.stats.messages} of {target} in {within_s} s")


async def simulate(
    estate: Estate,
    broker: Broker,
    seconds: float,
    *,
    speed: float = 60,
    seed: int = 1,
    record: Path | None = None,
    rate_scale: float = 1.0,
    during: Callable[[Simulator], Awaitable[Any]] | None = None,
    incidents: tuple[str, ...] = (),
    incident_delay_s: float = 5.0,
    start_ms: int | None = None,
) -> dict[str, int]:
    """Run the simulator on ``estate``; ``during`` runs alongside (to cause faults). Returns last seq per device."""
    import asyncio

    options = SimOptions(
        mqtt=parse_mqtt_url(broker.url("simulator")),
        speed=speed,
        duration_s=seconds,
        seed=seed,
        record=record,
        rate_scale=rate_scale,
        incidents=tuple(Incident.parse(i) for i in incidents),
        incident_delay_s=incident_delay_s,
        start_ms=start_ms,
    )
    async with Simulator(estate, estate.devices, options) as sim:
        run = asyncio.create_task(sim.run())
        if during is not None:
            await during(sim)
        await run
    return {k: v for k, v in sim.last_seq().items() if v}
