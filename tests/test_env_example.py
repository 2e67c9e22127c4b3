"""Every setting is documented in .env.example."""

import re
from pathlib import Path

from api.settings import ApiSettings
from grafana.settings import GrafanaSettings
from ingest.settings import IngestSettings
from load.settings import LoadSettings
from rules.settings import RulesSettings
from runtime.settings import ENV_PREFIX
from sim.settings import SimSettings

TEXT = (Path(__file__).parents[1] / ".env.example").read_text()


def test_every_setting_is_in_env_example() -> None:
    documented = set(re.findall(rf"^#?\s*({ENV_PREFIX}\w+)=", TEXT, re.M))
    names = set(IngestSettings.model_fields) | set(RulesSettings.model_fields) | set(GrafanaSettings.model_fields)
    names |= set(ApiSettings.model_fields) | set(LoadSettings.model_fields) | set(SimSettings.model_fields)
    wanted = {f"{ENV_PREFIX}{name.upper()}" for name in names}
    assert wanted - documented == set(), "settings missing from .env.example"
    assert documented - wanted == set(), ".env.example documents settings that do not exist"
