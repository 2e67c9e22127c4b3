"""The instant rules through the engine, with true incidents and their look-alikes."""

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from devices.estate import Estate
from rules.config import ConfigError, DeviceSilent, RulesConfig
from rules.engine import Engine

TZ = dt.timezone(dt.timedelta(hours=8))


def at(hour: int, minute: int = 0, day: int = 1) -> int:
    return int(dt.datetime(2026, 12, day, hour, minute, tzinfo=TZ).timestamp() * 1000)


def quiet_config(config: RulesConfig | None = None) -> RulesConfig:
    """Without the silent-device rule, which sparse hand-made feeds would trip at every step."""
    config = config or RulesConfig.load()
    rules = config.rules.model_copy(update={"device_silent": DeviceSilent(enabled=False)})
    return config.model_copy(update={"rules": rules})


class Feed:
    """Messages into an engine over the small estate; collects what changed."""

    def __init__(self, estate: Estate, config: RulesConfig | None = None, silent_rule: bool = False) -> None:
        self.engine = Engine(estate, (config or RulesConfig.load()) if silent_rule else quiet_config(config))
        self.site = estate.site.id
        self.seq = 0
        self.changes: list[dict[str, Any]] = []

    def send(self, device_type: str, device: str, channel: str, /, **body: Any) -> list[dict[str, Any]]:
        self.seq += 1
        topic = f"estate/v1/{self.site}/{device_type}/{device}/{channel}"
        out = [c.as_json() for c in self.engine.process(topic, json.dumps({"seq": self.seq, **body}).encode())]
        self.changes += out
        return out


SMOKE = "smk-b001-u1-101"
NORMAL = {"smoke_obscuration_pct": 0.2, "temp_c": 21.0, "battery_pct": 90.0, "rssi_dbm": -80.0}


def test_smoke_alarm_is_critical_at_once_to_grid_office_and_radios(small: Estate) -> None:
    feed = Feed(small)
    [opened] = feed.send(
        "smoke_sensor", SMOKE, "event", ts=at(10), type="alarm", smoke_obscuration_pct=12.0, temp_c=40.0
    )
    assert (opened["rule"], opened["subject"], opened["state"], opened["severity"], opened["change"]) == (
        "fire",
        SMOKE,
        "open",
        "critical",
        "opened",
    )
    assert opened["ts"] == at(10) and opened["unit"] == "b001-u1" and opened["grid"] == "g01"
    assert "worker:w01a" in opened["recipients"]  # the day worker at 10:00
    assert "worker:w01b" not in opened["recipients"]
    assert {"contact:property_office", "contact:property_manager"} <= set(opened["recipients"])
    assert "radio:radio-01" in opened["recipients"]  # held by w01a, on duty
    assert opened["evidence"][0]["smoke_obscuration_pct"] == 12.0


def test_at_night_the_night_worker_is_called(small: Estate) -> None:
    [opened] = Feed(small).send(
        "smoke_sensor", SMOKE, "event", ts=at(23), type="alarm", smoke_obscuration_pct=12.0, temp_c=40.0
    )
    assert "worker:w01b" in opened["recipients"] and "worker:w01a" not in opened["recipients"]
    assert "radio:radio-01" not in opened["recipients"], "its holder is off duty"


def test_alarm_repeats_count_then_clear_resolves(small: Estate) -> None:
    feed = Feed(small)
    feed.send("smoke_sensor", SMOKE, "event", ts=at(10), type="alarm", smoke_obscuration_pct=12.0, temp_c=40.0)
    [again] = feed.send(
        "smoke_sensor", SMOKE, "telemetry", ts=at(10, 5), state="alarm", **{**NORMAL, "smoke_obscuration_pct": 30.0}
    )
    assert (again["change"], again["count"], again["state"]) == ("repeated", 2, "open")
    [done] = feed.send("smoke_sensor", SMOKE, "event", ts=at(10, 20), type="alarm_cleared")
    assert (done["change"], done["state"], done["resolved_ts"]) == ("resolved", "resolved", at(10, 20))
    [reopened] = feed.send(
        "smoke_sensor", SMOKE, "event", ts=at(11), type="alarm", smoke_obscuration_pct=9.0, temp_c=30.0
    )
    assert (reopened["change"], reopened["count"]) == ("opened", 1)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "test", "passed": True},
        {"type": "silenced"},
    ],
    ids=["self-test", "silenced"],
)
def test_look_alikes_raise_no_fire(small: Estate, body: dict[str, Any]) -> None:
    feed = Feed(small)
    assert feed.send("smoke_sensor", SMOKE, "event", ts=at(10), **body) == []
    assert feed.send("smoke_sensor", SMOKE, "telemetry", ts=at(10, 1), state="normal", **NORMAL) == []


def test_smoke_maintenance_items(small: Estate) -> None:
    feed = Feed(small)
    [fault] = feed.send("smoke_sensor", SMOKE, "event", ts=at(9), type="fault", code="E12")
    assert (fault["rule"], fault["severity"]) == ("smoke_maintenance", "info")
    [low] = feed.send(
        "smoke_sensor", SMOKE, "telemetry", ts=at(9, 5), state="low_battery", **{**NORMAL, "battery_pct": 4.0}
    )
    assert low["change"] == "repeated"
    [ok] = feed.send("smoke_sensor", SMOKE, "telemetry", ts=at(12), state="normal", **NORMAL)
    assert ok["change"] == "resolved"


def test_sos_reaches_every_radio_on_duty_and_every_grid(small: Estate) -> None:
    [sos] = Feed(small).send("radio", "radio-02", "event", ts=at(14), type="sos", lat=34.24, lon=117.23)
    assert (sos["rule"], sos["severity"]) == ("sos", "critical")
    assert sos["evidence"] == [{"ts": at(14), "lat": 34.24, "lon": 117.23}]
    grids = {g.id for g in small.grids}
    workers = {r for r in sos["recipients"] if r.startswith("worker:")}
    assert workers == {f"worker:w{g[1:]}a" for g in grids}
    assert "contact:security" in sos["recipients"]


def test_ptt_is_not_an_sos(small: Estate) -> None:
    assert Feed(small).send("radio", "radio-02", "event", ts=at(14), type="ptt", talk_s=4.0, channel=1) == []


CHG = "chg-b001-1"


def port(temp: float, **change: Any) -> dict[str, Any]:
    return {
        "port": 1,
        "state": "charging",
        "voltage_v": 220.0,
        "current_a": 1.0,
        "power_w": 220.0,
        "energy_wh": 10.0,
        "temp_c": temp,
        **change,
    }


def test_charger_overtemp_opens_and_clears_with_hysteresis(small: Estate) -> None:
    feed = Feed(small)
    assert feed.send("ev_charger", CHG, "telemetry", ts=at(20), **port(60.0)) == []
    [hot] = feed.send("ev_charger", CHG, "telemetry", ts=at(20, 1), **port(72.5))
    assert (hot["rule"], hot["subject"], hot["severity"]) == ("charger_overtemp", f"{CHG}:1", "warning")
    assert feed.send("ev_charger", CHG, "telemetry", ts=at(20, 2), **port(67.0)) == []  # between 65 and 70
    [cool] = feed.send("ev_charger", CHG, "telemetry", ts=at(20, 3), **port(60.0))
    assert cool["change"] == "resolved"


OVERLOAD_STOP = {
    "type": "session_stop",
    "port": 1,
    "session_id": "s1",
    "reason": "overload",
    "energy_wh": 50.0,
    "duration_s": 600.0,
}


def test_charger_fault_and_overload_twice_in_one_night(small: Estate) -> None:
    feed = Feed(small)
    [fault] = feed.send("ev_charger", CHG, "event", ts=at(19), type="fault", port=2, code="F7")
    assert (fault["rule"], fault["subject"]) == ("charger_fault", f"{CHG}:2")
    assert feed.send("ev_charger", CHG, "event", ts=at(22), **OVERLOAD_STOP) == []
    [twice] = feed.send("ev_charger", CHG, "event", ts=at(2, day=2), **OVERLOAD_STOP)  # the same night, past midnight
    assert (twice["rule"], twice["subject"]) == ("charger_overload", f"{CHG}:1:2026-12-01")


def test_overloads_on_different_nights_or_by_day_stay_quiet(small: Estate) -> None:
    feed = Feed(small)
    assert feed.send("ev_charger", CHG, "event", ts=at(22), **OVERLOAD_STOP) == []
    assert feed.send("ev_charger", CHG, "event", ts=at(22, day=2), **OVERLOAD_STOP) == []
    assert feed.send("ev_charger", CHG, "event", ts=at(12, day=3), **OVERLOAD_STOP) == []
    assert feed.send("ev_charger", CHG, "event", ts=at(13, day=3), **OVERLOAD_STOP) == []


DOOR = "door-b001-u1"


def test_door_held_open_then_closed(small: Estate) -> None:
    feed = Feed(small)
    [held] = feed.send("door_controller", DOOR, "event", ts=at(8), type="held_open", open_s=130.0)
    assert (held["rule"], held["severity"]) == ("door_held_open", "warning")
    assert "contact:security" in held["recipients"]
    [closed] = feed.send("door_controller", DOOR, "event", ts=at(8, 3), type="door_closed")
    assert closed["change"] == "resolved"


def test_forced_and_tailgating(small: Estate) -> None:
    feed = Feed(small)
    [forced] = feed.send("door_controller", DOOR, "event", ts=at(3), type="forced_open")
    [tail] = feed.send("door_controller", DOOR, "event", ts=at(3, 1), type="tailgating", persons=3)
    assert (forced["rule"], tail["rule"], tail["evidence"][0]["persons"]) == ("door_forced", "tailgating", 3)
    assert feed.send("door_controller", DOOR, "event", ts=at(3, 2), type="access", method="card", granted=True) == []


def test_overrides_per_device_and_disabled_rules(small: Estate, tmp_path: Path) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "rules:\n  tailgating: {enabled: false}\noverrides:\n"
        f"  - match: {{device: {CHG}}}\n    rules: {{charger_overtemp: {{threshold_c: 50, clear_below_c: 45}}}}\n"
    )
    feed = Feed(small, RulesConfig.load(cfg))
    assert feed.send("door_controller", DOOR, "event", ts=at(3), type="tailgating", persons=2) == []
    [hot] = feed.send("ev_charger", CHG, "telemetry", ts=at(20), **port(55.0))
    assert hot["rule"] == "charger_overtemp"
    assert feed.send("ev_charger", "chg-b001-2", "telemetry", ts=at(20), **port(55.0)) == [], "others keep 70 °C"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  charger_overtemp:\n    threshold_c: hot\n", r"line 3: rules.charger_overtemp.threshold_c"),
        ("rules:\n  fire:\n    enabled: true\n  smoke:\n    enabled: false\n", r"line 4: rules.smoke"),
        ("lateness_s: -1\n", r"line 1: lateness_s"),
        ("night:\n  start: 18:00\n  end: '07:00'\n", r"line 2: night.start: Value error, write times in quotes"),
        ("rules: [\n", r"not valid YAML"),
    ],
)
def test_a_bad_config_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        RulesConfig.load(cfg)


def test_unknown_devices_and_bad_payloads_are_counted_not_fatal(small: Estate) -> None:
    feed = Feed(small)
    assert (
        feed.send("smoke_sensor", "smk-nobody", "event", ts=at(1), type="alarm", smoke_obscuration_pct=1.0, temp_c=20.0)
        == []
    )
    assert feed.engine.process("estate/v1/small/smoke_sensor/" + SMOKE + "/event", b"{nope") == []
    assert feed.engine.ignored == {"unknown_device": 1, "bad_json": 1}


def test_the_live_engine_ignores_a_clock_from_the_future(small: Estate) -> None:
    """One device with a wrong clock must not move the event clock (and every deadline) for all."""
    now = at(10)
    feed = Feed(small)
    feed.engine = Engine(small, quiet_config(), wall_ms=lambda: now)
    feed.send("smoke_sensor", SMOKE, "telemetry", ts=now + 86_400_000, state="normal", **NORMAL)
    assert feed.engine.ignored == {"future": 1} and feed.engine.clock_ms == 0
    feed.send("smoke_sensor", SMOKE, "telemetry", ts=now + 60_000, state="normal", **NORMAL)
    assert feed.engine.clock_ms == now + 60_000, "within future_s (300 s): taken"
    replay = Feed(small)  # replay has no wall clock: recorded history is whatever time it is
    replay.send("smoke_sensor", SMOKE, "telemetry", ts=now + 86_400_000, state="normal", **NORMAL)
    assert replay.engine.clock_ms == now + 86_400_000
