"""invalid_payloads: ingest's noisy-device reports raise one maintenance alert per device, updated
while the device stays noisy, resolved after clear_after_min without a report."""

import json

from devices.estate import Estate
from devices.notices import noisy_topic
from rules.config import RulesConfig
from tests.rules.test_rules import NORMAL, SMOKE, Feed, at


def report(ts: int, device: str = SMOKE, *, final: bool = False, quarantined: bool = False, **counts: int) -> bytes:
    rejects = counts or {"bad_json": 61}
    return json.dumps({
        "ts": ts, "site": "small", "device_type": "smoke_sensor", "device_id": device,
        "window_start_ms": ts - ts % 60_000, "rejects": rejects, "total": sum(rejects.values()),
        "budget_per_min": 60, "final": final, "quarantined": quarantined, "worker": "ingest-1",
    }).encode()  # fmt: skip


def test_one_alert_per_noisy_device_updated_then_resolved(small: Estate) -> None:
    feed = Feed(small)
    topic = noisy_topic("small")
    [opened] = [c.as_json() for c in feed.engine.process(topic, report(at(10)))]
    assert (opened["rule"], opened["subject"], opened["severity"], opened["change"]) == (
        "invalid_payloads", SMOKE, "warning", "opened",
    )  # fmt: skip
    assert opened["evidence"][-1]["rejects"] == {"bad_json": 61}
    assert "contact:property_office" in opened["recipients"]
    later = report(at(10, 1), final=True, bad_json=900, schema=100)
    [updated] = [c.as_json() for c in feed.engine.process(topic, later)]
    assert updated["change"] == "updated" and updated["evidence"][-1]["total"] == 1000
    [quarantined] = [c.as_json() for c in feed.engine.process(topic, report(at(10, 2), quarantined=True))]
    assert "quarantined" in quarantined["title"] and quarantined["evidence"][-1]["quarantined"]
    # The device's own traffic moves the clock; 30 quiet minutes later the alert resolves.
    assert not [c for c in feed.send("smoke_sensor", SMOKE, "telemetry", ts=at(10, 31), state="normal", **NORMAL)
                if c["rule"] == "invalid_payloads"]  # fmt: skip
    resolved = [c for c in feed.send("smoke_sensor", SMOKE, "telemetry", ts=at(10, 33), state="normal", **NORMAL)
                if c["rule"] == "invalid_payloads"]  # fmt: skip
    assert [c["change"] for c in resolved] == ["resolved"]


def test_reports_for_unknown_devices_or_garbage_are_ignored(small: Estate) -> None:
    feed = Feed(small)
    topic = noisy_topic("small")
    assert feed.engine.process(topic, report(at(10), device="nobody")) == []
    assert feed.engine.process(topic, b"{not json") == []
    assert feed.engine.process(topic, report(at(10)).replace(b'"small"', b'"elsewhere"')) == []
    assert feed.engine.ignored == {"unknown_device": 2, "bad_notice": 1}


def test_the_rule_can_be_turned_off(small: Estate) -> None:
    config = RulesConfig.load(runtime={"rules": {"invalid_payloads": {"enabled": False}}})
    feed = Feed(small, config)
    assert feed.engine.process(noisy_topic("small"), report(at(10))) == []
