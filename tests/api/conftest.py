from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devices.estate import Estate
from rules.service import RulesService
from tests.support.api import RunningApi, Tokens, api_settings, make_tokens, running_api
from tests.support.rules import rules_settings
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


@pytest.fixture
async def rules(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path, small: Estate
) -> AsyncIterator[RulesService]:
    """The rules service: the one sender of the alert outbox, so the copies of the API's actions
    (radios, apps, the stream, InfluxDB) go out only with it running, as in production."""
    (tmp_path / "rules").mkdir()
    settings = rules_settings(broker, influxd.url, influx_db, registry_url, tmp_path / "rules", small, None)
    async with RulesService(settings) as svc:
        yield svc

