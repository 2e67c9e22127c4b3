import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devices.estate import Estate
from devices.reference import reference_estate
from tests.support.estates import small_estate
from tests.support.servers import (
    Broker,
    InfluxServer,
    PostgresServer,
    start_broker,
    start_influx,
    start_postgres,
)

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session, started when a test first asks; a database per test."""
    server = start_postgres()
    yield server
    server.stop()
    shutil.rmtree(server.layout.root, ignore_errors=True)


REGISTRY_BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_registries`` that use the registry run once on SQLite and once on
    PostgreSQL; every other test on SQLite. The mark sits on the modules whose tests rest on the
    registry's constraints, locking and types (docs/registry.md says which, and why)."""
    if metafunc.definition.get_closest_marker("both_registries") and "registry_backend" in metafunc.fixturenames:
        metafunc.parametrize("registry_backend", REGISTRY_BACKENDS, indirect=True)


@pytest.fixture
def registry_backend(request: pytest.FixtureRequest) -> str:
    """Where the registry lives: SQLite, unless parametrized (see ``pytest_generate_tests``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def blank_registry_url(request: pytest.FixtureRequest, registry_backend: str, tmp_path: Path) -> str:
    """An empty registry database on the test's backend."""
    if registry_backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


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
