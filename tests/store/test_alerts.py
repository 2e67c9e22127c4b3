"""The alert book: engine changes applied once, people's actions audited, the outbox deduplicated."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.alerts import Alert
from store.alert_copies import mirror_line, open_lines
from store.alerts import AlertNotFoundError, AlertStateError, AlertStore
from store.outbox import CLAIM_LEASE_S
from store.registry.db import Registry

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


class Clock:
    def __init__(self) -> None:
        self.t = 1_764_547_200.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(blank_registry_url: str, clock: Clock) -> AsyncIterator[AlertStore]:
    async with Registry(blank_registry_url) as reg:
        yield AlertStore(reg, clock)


def snap(**over: Any) -> Alert:
    base: dict[str, Any] = {
        "rule": "fire_lane",
        "subject": "fl-01",
        "site": "small",
        "severity": "info",
        "title": "Fire lane fl-01 blocked",
        "first_ts": 1000,
        "last_ts": 1000,
        "state": "open",
        "count": 1,
        "escalation": 0,
        "grid": "g01",
        "building": None,
        "unit": None,
        "zone": "fl-01",
        "recipients": ["speaker:cam-fl-01"],
        "evidence": [{"ts": 1000, "stage": "voice"}],
        "resolved_ts": None,
    }
    return Alert.from_json({**base, **over})


async def test_open_escalate_resolve_and_the_audit_trail(store: AlertStore) -> None:
    opened = await store.apply("opened", 1000, snap())
    assert opened is not None and (opened.action, opened.notify, opened.alert.state) == ("opened", True, "open")
    raised = await store.apply(
        "updated",
        2000,
        snap(severity="warning", escalation=1, recipients=["worker:w01a"], evidence=[{"ts": 2000, "stage": "grid"}]),
    )
    assert raised is not None and (raised.action, raised.notify) == ("escalated", True)
    assert raised.alert.recipients == ["speaker:cam-fl-01", "worker:w01a"] and raised.alert.severity == "warning"
    resolved = await store.apply("resolved", 3000, snap(evidence=[{"ts": 3000, "clear_s": 120}]))
    assert resolved is not None and (resolved.action, resolved.alert.state, resolved.alert.resolved_ts) == (
        "resolved",
        "resolved",
        3000,
    )
    _, trail = await store.get(opened.alert.id)
    assert [(e.actor, e.action) for e in trail] == [("rules", "opened"), ("rules", "escalated"), ("rules", "resolved")]
    assert await store.open_alerts() == []


async def test_replayed_changes_do_nothing_and_notify_nobody(store: AlertStore) -> None:
    """A restarted engine replays history: the same changes arrive again."""
    changes = [
        ("opened", 1000, snap()),
        ("repeated", 1500, snap(evidence=[{"ts": 1500}])),
        ("updated", 2000, snap(severity="warning", escalation=1, evidence=[{"ts": 2000, "stage": "grid"}])),
    ]
    for change in changes:
        await store.apply(*change)
    for change in changes:
        assert await store.apply(*change) is None, change[0]
    [alert] = await store.open_alerts()
    assert (alert.count, alert.severity, alert.escalation) == (2, "warning", 1)


async def test_an_episode_that_ended_before_a_restart_is_not_raised_again(store: AlertStore) -> None:
    episode = [
        ("opened", 1000, snap()),
        ("updated", 2000, snap(severity="warning", escalation=1, evidence=[{"ts": 2000, "stage": "grid"}])),
        ("resolved", 3000, snap(evidence=[{"ts": 3000, "clear_s": 120}])),
    ]
    for change in episode:
        await store.apply(*change)
    for change in episode:  # the rebuild replays the whole episode
        assert await store.apply(*change) is None, change[0]
    again = await store.apply("opened", 9000, snap(first_ts=9000, last_ts=9000))
    assert again is not None and again.action == "opened", "a new episode is news"


async def test_one_open_alert_per_rule_and_subject(store: AlertStore) -> None:
    await store.apply("opened", 1000, snap())
    again = await store.apply("opened", 5000, snap(first_ts=5000, last_ts=5000))
    assert again is not None and (again.action, again.notify, again.alert.count) == ("repeated", False, 2)
    assert len(await store.open_alerts()) == 1
    other = await store.apply("opened", 5000, snap(subject="fl-02"))
    assert other is not None and other.action == "opened"


async def test_people_acknowledge_assign_and_resolve(store: AlertStore, clock: Clock) -> None:
    opened = await store.apply("opened", 1000, snap(rule="fire", subject="smk-1", severity="critical"))
    assert opened is not None
    alert_id = opened.alert.id
    clock.t += 60
    acked = await store.acknowledge(alert_id, "worker:w01a", "on my way")
    assert acked.state == "acknowledged" and acked.acknowledged_at_ms == int(clock.t * 1000)
    with pytest.raises(AlertStateError):
        await store.acknowledge(alert_id, "worker:w01a")
    await store.assign(alert_id, "w01b", "engineer:li")
    done = await store.resolve(alert_id, "worker:w01b", "false alarm: cooking smoke")
    assert done.state == "resolved" and done.assignee == "w01b"
    with pytest.raises(AlertStateError):
        await store.resolve(alert_id, "worker:w01b")
    with pytest.raises(AlertNotFoundError):
        await store.acknowledge(999, "worker:w01a")
    _, trail = await store.get(alert_id)
    assert [(e.actor, e.action, e.detail.get("note")) for e in trail] == [
        ("rules", "opened", None),
        ("worker:w01a", "acknowledged", "on my way"),
        ("engineer:li", "assigned", None),
        ("worker:w01b", "resolved", "false alarm: cooking smoke"),
    ]
    # The sensor still alarms after a person closed the case: a new alert, people hear of it again.
    reopened = await store.apply("repeated", 9000, snap(rule="fire", subject="smk-1", severity="critical"))
    assert reopened is not None and (reopened.action, reopened.notify) == ("reopened", True)
    assert reopened.alert.id != alert_id


async def test_unacknowledged_alerts_escalate_on_the_wall_clock(store: AlertStore, clock: Clock) -> None:
    opened = await store.apply("opened", 1000, snap(rule="fire", subject="smk-1", severity="critical"))
    info = await store.apply("opened", 1000, snap())
    assert opened is not None and info is not None
    timeouts = {"critical": [120, 600], "warning": [900]}

    def managers(alert: Any, level: int) -> list[str]:
        return ["contact:property_manager"] if level == 1 else ["contact:community_police"]

    clock.t += 119
    assert await store.escalate_unacknowledged(timeouts, managers) == []
    clock.t += 2
    [raised] = await store.escalate_unacknowledged(timeouts, managers)
    assert raised.id == opened.alert.id and raised.ack_escalations == 1
    assert "contact:property_manager" in raised.recipients
    assert await store.escalate_unacknowledged(timeouts, managers) == [], "once per level"
    await store.acknowledge(opened.alert.id, "worker:w01a")
    clock.t += 1000
    assert await store.escalate_unacknowledged(timeouts, managers) == [], "acknowledged: no more"


async def test_a_claim_hides_rows_from_other_senders_until_sent_released_or_expired(
    store: AlertStore, clock: Clock
) -> None:
    outbox = store.outbox
    await outbox.enqueue_many([(f"k{n}", "wecom", 1, {"n": n}) for n in range(4)])
    mine = await outbox.take("wecom", limit=2)
    assert [m.key for m in mine] == ["k0", "k1"]
    assert await outbox.claim(mine) == [], "claimed once: a second sender wins nothing"
    theirs = await outbox.take("wecom")
    assert [t.key for t in theirs] == ["k2", "k3"]
    await outbox.release([theirs[0].id])  # its sender failed: due again at once
    assert [t.key for t in await outbox.take("wecom")] == ["k2"]
    await outbox.settle([mine[0].id], "sent")
    clock.t += CLAIM_LEASE_S  # the claimers of k1, k2 and k3 died: their rows come back, the sent one not
    assert sorted(t.key for t in await outbox.take("wecom")) == ["k1", "k2", "k3"]


async def test_the_outbox_takes_a_key_once(store: AlertStore, clock: Clock) -> None:
    outbox = store.outbox
    assert await outbox.enqueue_many([("1:opened:wecom", "wecom", 1, {"text": "a"})]) == 1
    assert await outbox.enqueue_many([("1:opened:wecom", "wecom", 1, {"text": "a"})]) == 0
    [due] = await outbox.due("wecom")
    await outbox.retry_later([due.id], 5, "HTTP 502")
    assert await outbox.due("wecom") == []
    clock.t += 5
    [again] = await outbox.due("wecom")
    assert again.attempts == 1
    await outbox.settle([again.id], "sent")
    assert await outbox.listing("wecom") == [("1:opened:wecom", "sent", 1)]


async def test_every_change_queues_its_copies_with_it_whoever_makes_it(store: AlertStore, clock: Clock) -> None:
    """The engine's changes and people's actions alike leave one MQTT copy and one InfluxDB line each
    in the outbox; replaying the engine's change queues nothing again."""
    opened = await store.apply("opened", 1000, snap())
    assert opened is not None
    assert await store.apply("opened", 1000, snap()) is None
    clock.t += 10
    await store.acknowledge(opened.alert.id, "worker:w01a")
    await store.assign(opened.alert.id, "w01b", "worker:w01a")
    await store.resolve(opened.alert.id, "worker:w01a")
    for channel in ("mqtt", "influx"):
        queued = await store.outbox.listing(channel)
        actions = [key.split(":")[1] for key, _, _ in queued]
        assert actions == ["opened", "acknowledged", "assigned", "resolved"], channel
        assert all(state == "pending" for _, state, _ in queued)
    [*_, last] = await store.outbox.due("mqtt")
    assert last.message["topic"] == "estate/v1/small/alerts/g01/fire_lane/change"
    assert last.message["payload"]["action"] == "resolved" and last.message["payload"]["assignee"] == "w01b"


async def test_open_counts_are_written_for_every_rule_and_grid_with_zeros(store: AlertStore, clock: Clock) -> None:
    await store.apply("opened", 1000, snap())
    sos = await store.apply("opened", 1000, snap(rule="sos", subject="radio-01", grid=None, severity="critical"))
    assert sos is not None
    await store.acknowledge(sos.alert.id, "worker")
    counts = await store.open_counts("small")
    assert counts == {("fire_lane", "g01", "info", "open"): 1, ("sos", "_estate", "critical", "acknowledged"): 1}
    lines = open_lines("small", ["fire_lane", "sos", "fire"], ["g01", "g02"], counts, 5)
    by_key = {line.split(" ")[0]: line.split(" ")[1] for line in lines}
    assert len(lines) == 3 * 3  # every rule x (two grids and the estate-wide one)
    assert by_key["alerts_open,grid=g01,rule=fire_lane,site=small"] == (
        "info=1i,warning=0i,critical=0i,open=1i,acknowledged=0i"
    )
    assert by_key["alerts_open,grid=_estate,rule=sos,site=small"].endswith("critical=1i,open=0i,acknowledged=1i")
    zeros = "info=0i,warning=0i,critical=0i,open=0i,acknowledged=0i"
    assert by_key["alerts_open,grid=g02,rule=fire,site=small"] == zeros


async def test_the_influx_copy_of_an_acknowledgement_says_how_long_it_took(store: AlertStore, clock: Clock) -> None:
    opened = await store.apply("opened", 1000, snap())
    assert opened is not None
    assert "ack_s" not in mirror_line(opened.alert, "opened", 1000)
    clock.t += 95.5
    acked = await store.acknowledge(opened.alert.id, "worker")
    line = mirror_line(acked, "acknowledged", store.now_ms())
    assert ",action=acknowledged," in line and ",ack_s=95.5 " in line


async def test_a_raised_alert_escalates_its_new_severitys_timeout_after_the_raise(
    store: AlertStore, clock: Clock
) -> None:
    """A fire lane opens as info (voice) and becomes a warning at 5 min: the warning's 30 min run from
    the raise, not from the opening (that was 3.5 min early)."""
    timeouts = {"critical": [180, 900], "warning": [1800], "info": []}
    await store.apply("opened", 1000, snap())
    clock.t += 210
    await store.apply("updated", 211_000, snap(severity="warning", escalation=1))
    clock.t += 1799
    assert await store.escalate_unacknowledged(timeouts, lambda a, n: []) == []
    clock.t += 1
    [raised] = await store.escalate_unacknowledged(timeouts, lambda a, n: ["contact:property_manager"])
    assert raised.ack_escalations == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 3000), st.lists(st.integers(1, 400), min_size=1, max_size=30))
async def test_escalation_comes_at_the_first_check_after_each_timeout(
    tmp_path_factory: pytest.TempPathFactory, raise_after_s: int, checks: list[int]
) -> None:
    clock = Clock()
    timeouts = {"critical": [180.0, 900.0], "warning": [1800.0]}
    async with Registry(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('esc')}/reg.db") as reg:
        store = AlertStore(reg, clock)
        await store.apply("opened", 1000, snap(severity="warning"))
        opened_at = clock.t
        severity_at, severity, raised_done = opened_at, "warning", False
        level_at: list[float] = []
        for step in checks:
            clock.t += step
            if not raised_done and clock.t - opened_at >= raise_after_s:
                await store.apply("updated", 2000, snap(severity="critical", escalation=2))
                severity_at, severity, raised_done = clock.t, "critical", True
            before = len(level_at)
            due = timeouts[severity][before] if before < len(timeouts[severity]) else None
            got = await store.escalate_unacknowledged(timeouts, lambda a, n: [])
            if due is not None and clock.t - severity_at >= due:
                assert len(got) == 1, f"level {before + 1} due {due} s after {severity}, at {clock.t - severity_at}"
                level_at.append(clock.t)
            else:
                assert got == [], "escalated before its timeout"
