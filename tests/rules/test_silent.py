"""Silent devices: one maintenance item per building, however many of its devices go quiet."""

from typing import Any

from devices.estate import Estate
from tests.rules.test_rules import NORMAL, Feed, at

SMOKES = ["smk-b001-u1-101", "smk-b001-u1-102", "smk-b001-u1-201"]


def only(estate: Estate, *ids: str) -> Estate:
    """The estate with just these devices: every device of an estate is expected to report."""
    return estate.model_copy(update={"devices": [d for d in estate.devices if d.id in ids]})


def heartbeat(feed: Feed, device: str, ts: int) -> list[dict[str, Any]]:
    return feed.send("smoke_sensor", device, "telemetry", ts=ts, state="normal", **NORMAL)


def test_an_outage_raises_one_item_per_building_and_clears_as_devices_return(small: Estate) -> None:
    feed = Feed(only(small, *SMOKES, "radio-01"), silent_rule=True)
    for device in SMOKES:
        heartbeat(feed, device, at(10))
    assert feed.changes == []
    # Only the radio keeps talking (its own clock moves the engine's): the smoke sensors (300 s) go quiet.
    for minute in range(1, 17):
        feed.send(
            "radio",
            "radio-01",
            "telemetry",
            ts=at(10, minute),
            lat=34.24,
            lon=117.23,
            accuracy_m=5.0,
            speed_m_s=1.0,
            battery_pct=80.0,
        )
    silent = [c for c in feed.changes if c["rule"] == "device_silent"]
    opened = [c for c in silent if c["change"] == "opened"]
    assert len(opened) == 1 and opened[0]["subject"] == "b001" and opened[0]["ts"] == at(10, 15)
    assert silent[-1]["evidence"][-1]["silent_count"] == 3
    assert "worker:w01a" in opened[0]["recipients"]

    for device in SMOKES[:2]:
        heartbeat(feed, device, at(10, 17))
    assert feed.changes[-1]["change"] == "updated" and feed.changes[-1]["evidence"][-1]["silent_count"] == 1
    heartbeat(feed, SMOKES[2], at(10, 18))
    assert (feed.changes[-1]["change"], feed.changes[-1]["subject"]) == ("resolved", "b001")


def test_devices_that_keep_reporting_are_never_silent(small: Estate) -> None:
    feed = Feed(only(small, SMOKES[0]), silent_rule=True)
    for minute in range(0, 60, 4):
        heartbeat(feed, SMOKES[0], at(10, minute))
    assert [c for c in feed.changes if c["rule"] == "device_silent"] == []


def test_a_device_never_heard_goes_silent_a_window_after_the_first_reading(small: Estate) -> None:
    feed = Feed(only(small, *SMOKES), silent_rule=True)
    for minute in range(0, 20):
        heartbeat(feed, SMOKES[0], at(10, minute))  # the other two never say a word
    opened = [c for c in feed.changes if c["rule"] == "device_silent" and c["change"] == "opened"]
    assert len(opened) == 1 and opened[0]["ts"] == at(10, 15), "3 intervals of 300 s after the first reading"
    last = [c for c in feed.changes if c["rule"] == "device_silent"][-1]
    assert last["ts"] == at(10, 15) and last["evidence"][-1]["silent"] == sorted(SMOKES[1:])


def test_a_device_the_registry_disables_or_deletes_leaves(small: Estate) -> None:
    estate = only(small, *SMOKES)
    feed = Feed(estate, silent_rule=True)
    for minute in range(0, 16):
        heartbeat(feed, SMOKES[0], at(10, minute))
    assert feed.changes[-1]["evidence"][-1]["silent_count"] == 2
    feed.engine.sync_devices([d for d in estate.devices if d.id != SMOKES[1]])  # one disabled
    assert feed.engine.ignored == {}
    heartbeat(feed, SMOKES[0], at(10, 16))
    assert feed.changes[-1]["evidence"][-1]["silent"] == [SMOKES[2]]
    assert feed.send("smoke_sensor", SMOKES[1], "telemetry", ts=at(10, 17), state="normal", **NORMAL) == []
    assert feed.engine.ignored == {"device_disabled": 1}, "a disabled device's readings are not judged"
    feed.engine.sync_devices([d for d in estate.devices if d.id == SMOKES[0]])  # the last one deleted
    heartbeat(feed, SMOKES[0], at(10, 18))
    assert [c["change"] for c in feed.changes if c["rule"] == "device_silent"][-1] == "resolved"
