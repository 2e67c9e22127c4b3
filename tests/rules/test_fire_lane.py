"""Blocked fire lanes: staged warnings, and the stops and vehicles that must not raise them."""

from pathlib import Path
from typing import Any

from devices.estate import Estate, Vehicle
from rules.config import RulesConfig
from tests.rules.test_rules import Feed, at

LANE = "fl-01"
SENSORS = [f"sp-fl-01-{n}" for n in (1, 2, 3)]


def space(feed: Feed, ts: int, occupied: bool, sensor: str = SENSORS[0]) -> list[dict[str, Any]]:
    return feed.send("space_sensor", sensor, "telemetry", ts=ts, occupied=occupied, battery_pct=80.0)


def park(feed: Feed, start: int, minutes: float, plate: str | None = "苏C88A21") -> list[dict[str, Any]]:
    """A car stops in the lane: camera and sensor agree; readings every 30 s; then it leaves."""
    out: list[dict[str, Any]] = []
    out += feed.send(
        "camera",
        "cam-fl-01",
        "event",
        ts=start,
        type="zone_occupied",
        zone=LANE,
        object_kind="car",
        plate=plate,
        confidence=0.95,
    )
    steps = int(minutes * 2)
    for i in range(steps + 1):
        out += space(feed, start + i * 30_000, True)
    end = start + steps * 30_000 + 1000
    out += feed.send("camera", "cam-fl-01", "event", ts=end, type="zone_cleared", zone=LANE)
    for i in range(1, 9):  # 4 minutes of clear readings
        out += space(feed, end + i * 30_000, False)
    return out


def test_a_blocked_lane_is_warned_then_alerted_then_escalated_then_resolved(small: Estate) -> None:
    changes = park(Feed(small), at(15), 25)
    stages = [(c["change"], c["severity"], c["escalation"]) for c in changes]
    assert stages[:3] == [("opened", "info", 0), ("updated", "warning", 1), ("updated", "critical", 2)]
    voice, grid, escalated = changes[:3]
    assert (
        voice["recipients"] == ["speaker:cam-fl-01"]
        and voice["ts"]
        == at(
            15,
            1,
        )
        + 30_000
    )
    assert "worker:w01a" in grid["recipients"] and grid["ts"] == at(15, 5)
    assert "contact:property_manager" in escalated["recipients"] and escalated["ts"] == at(15, 20)
    assert escalated["evidence"][-1]["plate"] == "苏C88A21" and "苏C88A21" in escalated["title"]
    resolved = changes[-1]
    assert resolved["change"] == "resolved" and resolved["state"] == "resolved"
    assert len([c for c in changes if c["change"] == "resolved"]) == 1


def test_a_three_minute_delivery_stop_reaches_nobody(small: Estate) -> None:
    changes = park(Feed(small), at(11), 3)
    assert not [c for c in changes if any(r.startswith(("worker:", "contact:")) for r in c["recipients"])]
    assert [c["change"] for c in changes] == ["opened", "resolved"], "a voice warning only, then cleared"


def test_an_ambulance_and_a_permit_are_exempt(small: Estate, tmp_path: Path) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(
        "rules:\n  fire_lane:\n    exempt_plates: ['苏C12000']\n    permits:\n"
        "      - {plate: '苏C7MOVE', zone: fl-01,\n"
        "         start: '2026-12-01T08:00+08:00', end: '2026-12-01T18:00+08:00'}\n"
    )
    config = RulesConfig.load(cfg)
    assert park(Feed(small, config), at(15), 25, plate="苏C12000") == []
    assert park(Feed(small, config), at(15), 25, plate="苏C7MOVE") == []
    outside = park(Feed(small, config), at(19), 25, plate="苏C7MOVE")
    assert outside and outside[0]["change"] == "opened", "outside its window the permit does not hold"


def test_brief_gaps_do_not_reset_a_long_block(small: Estate) -> None:
    feed = Feed(small)
    changes: list[dict[str, Any]] = []
    for minute in range(12):
        for half in range(2):
            ts = at(15, minute) + half * 30_000
            changes += space(feed, ts, not (minute == 4 and half == 1))  # one clear reading at 4:30
    assert any(c["escalation"] == 1 for c in changes), "80 % of the time occupied still counts"


def test_occupancy_from_sensors_alone(small: Estate) -> None:
    feed = Feed(small)
    changes: list[dict[str, Any]] = []
    for i in range(13):
        changes += space(feed, at(2) + i * 30_000, True, SENSORS[1])
    assert changes and changes[-1]["escalation"] == 1 and changes[-1]["zone"] == LANE


def test_the_blocking_plates_owner_unit_is_named_even_through_a_misread(small: Estate) -> None:
    estate = small.model_copy(update={"vehicles": [Vehicle(plate="苏C88A21", unit="b002-u1")]})
    grid = next(c for c in park(Feed(estate), at(15), 6, plate="苏C88A21") if c["escalation"] == 1)
    assert grid["evidence"][-1]["owner_unit"] == "b002-u1"
    misread = next(c for c in park(Feed(estate), at(15), 6, plate="苏C88A27") if c["escalation"] == 1)
    assert misread["evidence"][-1]["owner_unit"] == "b002-u1", "one character off a registered plate"
    stranger = next(c for c in park(Feed(estate), at(15), 6, plate="苏C99Z99") if c["escalation"] == 1)
    assert stranger["evidence"][-1]["owner_unit"] is None


def test_emergency_and_police_vehicles_never_block_and_say_so(small: Estate, tmp_path: Path) -> None:
    assert park(Feed(small), at(15), 25, plate="苏C1234应急") == [], "an ambulance on a call-out"
    assert park(Feed(small), at(15), 25, plate="苏C·1234警") == [], "a police car, its plate with the dot"
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("rules:\n  fire_lane:\n    exempt_services: false\n")
    off = park(Feed(small, RulesConfig.load(cfg)), at(15), 25, plate="苏C1234应急")
    assert off and off[0]["change"] == "opened", "an estate may count them"
    # A car blocks the lane; a fire engine arrives: the open alert names it as not blocking.
    feed = Feed(small)
    feed.send("camera", "cam-fl-01", "event", ts=at(15), type="zone_occupied", zone=LANE, object_kind="car",
              plate="苏C88A21", confidence=0.95)  # fmt: skip
    stages = [c for i in range(13) for c in space(feed, at(15) + i * 30_000, True)]
    assert stages[-1]["escalation"] == 1
    [noted] = feed.send("camera", "cam-fl-01", "event", ts=at(15, 6) + 30_000, type="zone_occupied", zone=LANE,
                        object_kind="truck", plate="苏C 0119应急", confidence=0.9)  # fmt: skip
    assert noted["evidence"][-1] == {"ts": at(15, 6) + 30_000, "exempt_seen": "苏C0119应急 (emergency)",
                                     "counted_as_blocking": False}  # fmt: skip


def test_exempt_plates_match_in_any_form(small: Estate, tmp_path: Path) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("rules:\n  fire_lane:\n    exempt_plates: ['苏c·12000']\n")
    config = RulesConfig.load(cfg)
    assert config.rules.fire_lane.exempt_plates == ["苏C12000"]
    assert park(Feed(small, config), at(15), 25, plate="苏C 12000") == []
    assert park(Feed(small, config), at(15), 25, plate="苏Ｃ１２０００") == []
