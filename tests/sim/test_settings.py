"""The simulator's flags are generated from its settings like every command's: each has its
environment variable and its short historical flag, repeatable ones repeat, errors name both."""

import pytest
from click.testing import CliRunner

from devices.types import DeviceType
from estatewatch.commands.simulate import simulate
from estatewatch.options import settings_from
from sim.settings import SimSettings


def parsed(args: list[str]) -> SimSettings:
    ctx = simulate.make_context("simulate", args)
    return settings_from(dict(ctx.params), SimSettings)


def test_short_and_long_flags_are_the_same_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTATEWATCH_SIM_SEED", "9")
    s = parsed(["--speed", "60", "--type", "camera", "--sim-types", "radio", "--incident", "sos",
                "--incident", "blocked_fire_lane:fl-01", "--duration", "30", "--estate", "x.yaml"])  # fmt: skip
    assert s.sim_speed == 60.0 and s.sim_duration_s == 30.0 and str(s.estate_file) == "x.yaml"
    assert s.sim_types == [DeviceType.CAMERA, DeviceType.RADIO]
    assert s.sim_incidents == ["sos", "blocked_fire_lane:fl-01"]
    assert s.sim_seed == 9, "the environment, where no flag says otherwise"
    assert parsed(["--seed", "3"]).sim_seed == 3, "a flag over the environment"


def test_repeatable_settings_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTATEWATCH_SIM_TYPES", '["smoke_sensor"]')
    assert parsed([]).sim_types == [DeviceType.SMOKE_SENSOR]


def test_a_bad_value_names_the_variable_and_the_flag() -> None:
    result = CliRunner().invoke(simulate, ["--speed", "fast"])
    assert result.exit_code == 2
    assert "ESTATEWATCH_SIM_SPEED (--sim-speed)" in result.output
