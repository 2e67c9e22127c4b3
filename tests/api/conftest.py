from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import RunningApi, Tokens, api_settings, make_tokens, running_api
from tests.support.servers import Broker, InfluxServer


@pytest.fixture
async def tokens(registry_url: str) -> Tokens:
    return await make_tokens(registry_url)


@pytest.fixture
async def api(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path
) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings(broker, influxd.url, influx_db, registry_url, tmp_path)) as running:
        yield running
