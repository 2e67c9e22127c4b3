import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devices.estate import Estate
from devices.reference import reference_estate
from tests.support.estates import small_estate
from tests.support.servers import Broker, InfluxServer, start_broker, start_influx

# Fixtures for tests that run the pipeline (ingest workers, the registry), wherever they live.
pytest_plugins = ["tests.support.pipeline"]

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One influxd for the session; tests isolate themselves with their own database."""
    server = start_influx(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


@pytest.fixture
def influx_db(influxd: InfluxServer) -> str:
    name = f"test{next(_db_names)}"
    influxd.create_database(name)
    return name


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[], Broker]]:
    made: list[Broker] = []

    def make() -> Broker:
        broker = start_broker(tmp_path / f"mosquitto{len(made)}")
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[[], Broker]) -> Broker:
    return broker_factory()


@pytest.fixture(scope="session")
def reference() -> Estate:
    return reference_estate()


@pytest.fixture(scope="session")
def small() -> Estate:
    return small_estate()
