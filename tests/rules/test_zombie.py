"""Zombie cars: weeks without movement, and the cars that only look like it."""

from typing import Any

import pytest

from devices.estate import Estate, Vehicle
from rules.config import RulesConfig
from tests.rules.test_rules import Feed, at

DAY = 86_400_000
PLATE = "苏C3K7Q2"
BAY = "sp-pk-s01-01"


def gate(feed: Feed, ts: int, plate: str | None, direction: str) -> list[dict[str, Any]]:
    return feed.send(
        "vehicle_gate", "vg-north", "event", ts=ts, type="plate_read", plate=plate, direction=direction, confidence=0.9
    )


def days_pass(feed: Feed, start: int, days: int, occupied: bool = True) -> list[dict[str, Any]]:
    """The bay's sensor reports once a day (it is also the clock)."""
    out: list[dict[str, Any]] = []
    for d in range(days + 1):
        out += feed.send("space_sensor", BAY, "telemetry", ts=start + d * DAY, occupied=occupied, battery_pct=80.0)
    return out


def sighted(feed: Feed, ts: int, zone: str) -> list[dict[str, Any]]:
    body = {"type": "plate_sighting", "plate": PLATE, "confidence": 0.9, "zone": zone}
    return feed.send("camera", "cam-pk-s01", "event", ts=ts, **body)


def zombie(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in changes if c["rule"] == "zombie_car"]


def test_watch_at_15_days_verify_at_30_critical_at_90(small: Estate) -> None:
    feed = Feed(small)
    t0 = at(9)
    days_pass(feed, t0 - DAY, 0)
    gate(feed, t0, PLATE, "in")
    changes = zombie(days_pass(feed, t0, 100))
    assert [(c["change"], c["severity"], c["evidence"][-1]["stage"]) for c in changes] == [
        ("opened", "info", "watch"),
        ("updated", "warning", "verify"),
        ("updated", "critical", "critical"),
    ]
    watch, verify, critical = changes
    assert watch["ts"] == t0 + 15 * DAY and watch["recipients"] == [], "a watchlist calls nobody"
    assert verify["ts"] == t0 + 30 * DAY and verify["evidence"][-1]["still_days"] == 30.0
    assert verify["recipients"] == ["contact:property_office"], "no zone, no registered owner: the office verifies"
    assert BAY in verify["evidence"][-1]["bays_held_since_then"]
    assert critical["ts"] == t0 + 90 * DAY and "contact:property_manager" in critical["recipients"]
    assert critical["subject"] == PLATE and critical["escalation"] == 2


def test_holiday_out_and_back_is_not_a_zombie(small: Estate) -> None:
    feed = Feed(small)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    days_pass(feed, t0, 2)
    gate(feed, t0 + 2 * DAY + 1000, PLATE, "out")
    days_pass(feed, t0 + 3 * DAY, 20)
    gate(feed, t0 + 24 * DAY, PLATE, "in")
    changes = zombie(days_pass(feed, t0 + 24 * DAY + 1000, 10))
    assert changes == [], "never 15 days in without moving"


@pytest.mark.parametrize("misread", ["苏C3K7O2", "皖C3K7Q2", "苏C3K7Q2D"])
def test_a_misread_out_still_lets_the_car_out(small: Estate, misread: str) -> None:
    feed = Feed(small)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    gate(feed, t0 + DAY, misread, "out")
    assert zombie(days_pass(feed, t0 + DAY, 40)) == []


def test_a_misread_out_resolves_an_open_watch(small: Estate) -> None:
    feed = Feed(small)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    days_pass(feed, t0, 16)
    [resolved] = zombie(gate(feed, t0 + 16 * DAY + 5, "苏C3K7Q8", "out"))
    assert (resolved["change"], resolved["subject"], resolved["state"]) == ("resolved", PLATE, "resolved")


def test_reads_without_a_plate_are_ignored(small: Estate) -> None:
    feed = Feed(small)
    t0 = at(9)
    for i in range(5):
        gate(feed, t0 + i, None, "in")
    assert zombie(days_pass(feed, t0, 40)) == []


def test_a_sighting_in_another_zone_is_movement(small: Estate) -> None:
    feed = Feed(small)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    sighting = {"type": "plate_sighting", "plate": PLATE, "confidence": 0.9}
    feed.send("camera", "cam-pk-s01", "event", ts=t0 + 600_000, zone="pk-s01", **sighting)
    days_pass(feed, t0, 20)
    [resolved] = zombie(feed.send("camera", "cam-pk-s01", "event", ts=t0 + 20 * DAY + 9, zone="pk-garage", **sighting))
    assert resolved["change"] == "resolved"
    assert zombie(days_pass(feed, t0 + 20 * DAY + 10, 10)) == []


def test_declared_absence_is_honoured_then_the_watch_resumes(small: Estate) -> None:
    config = RulesConfig.model_validate(
        {"rules": {"zombie_car": {"absences": [{"plate": PLATE, "start": "2026-12-01", "end": "2027-01-31"}]}}}
    )
    feed = Feed(small, config)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    changes = zombie(days_pass(feed, t0, 75))
    assert changes and all(c["ts"] >= at(0, day=1) + 62 * DAY for c in changes), "nothing until February"
    assert changes[0]["severity"] == "warning", "past 30 days by then: straight to verify"


def test_a_fully_watched_zone_with_every_bay_freed_means_it_moved(small: Estate) -> None:
    zones = [z.model_copy(update={"capacity": 1}) if z.id == "pk-s01" else z for z in small.zones]
    estate = small.model_copy(update={"zones": zones})
    feed = Feed(estate)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    sighted(feed, t0 + 60_000, "pk-s01")
    days_pass(feed, t0, 5)
    feed.send("space_sensor", BAY, "telemetry", ts=t0 + 5 * DAY + 1, occupied=False, battery_pct=80.0)
    changes = zombie(days_pass(feed, t0 + 6 * DAY, 30))
    assert [c["severity"] for c in changes] == ["info"], "watched, but its only bay was free: no verify call"


def test_the_zone_grid_and_owner_unit_are_named(small: Estate) -> None:
    estate = small.model_copy(update={"vehicles": [Vehicle(plate=PLATE, unit="b001-u1")]})
    feed = Feed(estate)
    t0 = at(9)
    gate(feed, t0, PLATE, "in")
    sighted(feed, t0 + 60_000, "pk-s01")
    verify = next(c for c in zombie(days_pass(feed, t0, 31)) if c["severity"] == "warning")
    assert verify["unit"] == "b001-u1" and verify["zone"] == "pk-s01"
    grid = next(z.grid for z in estate.zones if z.id == "pk-s01")
    assert verify["grid"] == grid and verify["evidence"][-1]["owner_unit"] == "b001-u1"
    assert any(r.startswith("worker:") for r in verify["recipients"])
