"""Flying-lead charging: the charger signature at night, and the look-alikes that must stay quiet."""

from pathlib import Path
from typing import Any

from devices.estate import Estate
from rules.config import RulesConfig
from tests.rules.test_rules import NORMAL, Feed, at

METER = "pm-b001-u1"
UNIT = "b001-u1"


def meter(feed: Feed, ts: int, power: float, device: str = METER) -> list[dict[str, Any]]:
    return feed.send(
        "power_meter",
        device,
        "telemetry",
        ts=ts,
        power_w=power,
        voltage_v=220.0,
        current_a=power / 220,
        energy_wh=1000.0,
    )


def play(feed: Feed, start: int, loads: list[tuple[int, float]], device: str = METER) -> list[dict[str, Any]]:
    """(minutes, watts) segments, a reading a minute from ``start``."""
    out, minute = [], 0
    for minutes, watts in loads:
        for _ in range(minutes):
            out += meter(feed, start + minute * 60_000, watts, device)
            minute += 1
    return out


CHARGE = [(30, 28.0), (60, 268.0), (20, 150.0), (10, 60.0), (10, 28.0)]  # baseline, CC, CV taper, float, off


def test_a_charger_at_night_opens_tapers_and_resolves(small: Estate) -> None:
    changes = play(Feed(small), at(19), CHARGE)
    opened = [c for c in changes if c["change"] == "opened"]
    assert len(opened) == 1
    alert = opened[0]
    assert (alert["rule"], alert["severity"], alert["unit"]) == ("flying_lead", "warning", UNIT)
    assert alert["ts"] == at(19, 40), "opened once the step held 10 minutes"
    assert alert["evidence"][0]["confidence"] == 0.6 and 230 < alert["evidence"][0]["step_w"] < 250
    taper = [c for c in changes if c["change"] == "updated"]
    assert taper and taper[0]["evidence"][-1]["confidence"] == 0.8
    resolved = [c for c in changes if c["change"] == "resolved"]
    assert len(resolved) == 1 and resolved[0]["ts"] == at(21, 5)  # 5 minutes back at baseline
    assert "worker:w01a" in alert["recipients"], "19:40: the day worker is on duty until 20:00"
    assert "contact:property_office" in alert["recipients"]


def test_an_ebike_seen_in_the_lift_raises_confidence(small: Estate) -> None:
    feed = Feed(small)
    feed.send("camera", "cam-b001-u1", "event", ts=at(18, 50), type="ebike_detected", location="lift", confidence=0.9)
    opened = [c for c in play(feed, at(19), CHARGE) if c["change"] == "opened"]
    assert opened[0]["evidence"][0]["confidence"] == 0.8 and opened[0]["evidence"][0]["ebike_seen"] is True


def test_smoke_rising_in_the_unit_makes_it_critical(small: Estate) -> None:
    feed = Feed(small)
    play(feed, at(19), CHARGE[:2])
    feed.send("smoke_sensor", "smk-b001-u1-301", "telemetry", ts=at(20, 31), state="normal", **NORMAL)
    [update] = feed.send(
        "smoke_sensor", "smk-b001-u1-301", "telemetry", ts=at(20, 36), state="normal", **{**NORMAL, "temp_c": 29.0}
    )
    assert (update["change"], update["severity"]) == ("updated", "critical")
    assert "smoke rising" in update["title"]


def test_one_incident_per_circuit_per_night(small: Estate) -> None:
    feed = Feed(small)
    first = play(feed, at(19), CHARGE)
    second = play(feed, at(21, 30), CHARGE)  # plugged in again the same night
    third = play(feed, at(19, day=2), CHARGE)  # the next night
    count = lambda changes: sum(c["change"] == "opened" for c in changes)  # noqa: E731
    assert (count(first), count(second), count(third)) == (1, 0, 1)


def test_look_alikes_stay_quiet(small: Estate) -> None:
    cases = {
        "a kettle: too big a step": [(30, 28.0), (3, 2028.0), (30, 28.0)],
        "a phone charger: too small": [(30, 28.0), (60, 40.0)],
        "a short load: not held 10 minutes": [(30, 28.0), (8, 268.0), (30, 28.0)],
        "a heated corridor: no low baseline": [(30, 300.0), (60, 560.0)],
    }
    for name, loads in cases.items():
        assert not [c for c in play(Feed(small), at(19), loads) if c["change"] == "opened"], name
    by_day = play(Feed(small), at(9), CHARGE)
    assert not [c for c in by_day if c["change"] == "opened"], "by day it is not the night-time rule's business"


def test_whitelisted_circuits_and_quiet_schedules(small: Estate, tmp_path: Path) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "rules:\n  flying_lead:\n    whitelist: [pm-b001-u2]\n"
        "    schedules: [{devices: [pm-b001-u3], start: '19:00', end: '23:00'}]\n"
    )
    config = RulesConfig.load(cfg)
    assert not [c for c in play(Feed(small, config), at(19), CHARGE, "pm-b001-u2") if c["change"] == "opened"]
    assert not [c for c in play(Feed(small, config), at(19), CHARGE, "pm-b001-u3") if c["change"] == "opened"]
    late = play(Feed(small, config), at(23, 10), CHARGE, "pm-b001-u3")
    assert [c for c in late if c["change"] == "opened"], "outside its quiet window the circuit is watched"
