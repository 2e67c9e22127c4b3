"""An alarm storm on one building written by two rules services (real processes) while grid workers
acknowledge and resolve through the API: one open alert per (site, rule, subject), every audit
event kept, every robot message sent once. On SQLite and on PostgreSQL."""

import asyncio
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from store.outbox import Outbox
from store.registry.db import Registry
from store.registry.schema import AlertEventRow, AlertRow, NotificationRow
from tests.support import alert_storm
from tests.support.api import RunningApi, Tokens

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


def storm(registry_url: str, seed: int, sent: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.support.alert_storm", registry_url, "small", str(seed), str(sent)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[bytes]) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()[-3000:]


async def act_while_running(
    api: RunningApi, token: str, registry_url: str, procs: list[subprocess.Popen[bytes]]
) -> Counter[str]:
    """Acknowledge open alerts as they appear, resolve some acknowledged ones, until the storm ends.
    The ids come from the registry, as a robot message brings them to a phone: the API's list is
    refreshed by the alert copies on MQTT, which this storm does not publish."""
    answered: Counter[str] = Counter()
    async with Registry(registry_url) as reg, api.client(token) as c:
        while any(p.poll() is None for p in procs):
            async with reg.session() as s:
                query = select(AlertRow.id).where(AlertRow.state == "open").order_by(AlertRow.id).limit(8)
                ids = (await s.scalars(query)).all()
            for alert_id in ids:
                r = await c.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "on my way"})
                answered[f"ack {r.status_code}"] += 1
                if r.status_code == 200 and alert_id % 3 == 0:
                    r = await c.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "checked"})
                    answered[f"resolve {r.status_code}"] += 1
            await asyncio.sleep(0.005)
    return answered


async def test_two_rules_services_and_the_api_keep_one_alert_book(
    api: RunningApi, tokens: Tokens, registry_url: str, tmp_path: Path
) -> None:
    sent = tmp_path / "sent.jsonl"
    procs = [storm(registry_url, seed, sent) for seed in (1, 2)]
    try:
        answered = await act_while_running(api, tokens.engineer, registry_url, procs)
    finally:
        for p in procs:
            finish(p)
    assert answered["ack 200"] > 0, answered  # the API really raced the storm
    assert set(answered) <= {"ack 200", "ack 409", "resolve 200", "resolve 409"}, answered

    async with Registry(registry_url) as reg:
        async with reg.session() as s:
            alerts = (await s.scalars(select(AlertRow).order_by(AlertRow.id))).all()
            events = (await s.scalars(select(AlertEventRow).order_by(AlertEventRow.id))).all()
            robots = (await s.scalars(select(NotificationRow).where(NotificationRow.channel == "wecom"))).all()
        listing = await Outbox(reg).listing("wecom")

    # One open alert per subject at any time: a subject's alerts follow each other, each resolved
    # before the next opened (the constraint alone only guards the present).
    by_subject: dict[str, list[AlertRow]] = {}
    for a in alerts:
        by_subject.setdefault(a.subject, []).append(a)
    assert len(by_subject) == alert_storm.SUBJECTS
    for subject, rows in by_subject.items():
        for earlier, later in itertools.pairwise(rows):
            assert earlier.resolved_at_ms is not None and earlier.resolved_at_ms <= later.opened_at_ms, subject
        assert sum(r.open_key is not None for r in rows) <= 1, subject
    # Every audit event kept: each alert's trail opens once, and every 200 the API gave is in a trail.
    trail: dict[int, list[str]] = {}
    for e in events:
        trail.setdefault(e.alert_id, []).append(e.action)
    for a in alerts:
        actions = trail[a.id]
        assert actions[0] in ("opened", "reopened") and actions[1:].count("opened") == 0, (a.id, actions)
        assert actions.count("acknowledged") <= 1 and actions.count("resolved") <= 1, (a.id, actions)
        assert (a.state == "resolved") == ("resolved" in actions), (a.id, a.state, actions)
    people = Counter(e.action for e in events if e.actor != "rules")
    assert people["acknowledged"] == answered["ack 200"]
    assert people["resolved"] == answered["resolve 200"]
    # Every robot message sent, and sent once, by whichever service claimed it.
    lines = [json.loads(line) for line in sent.read_text().splitlines()]
    keys = Counter(line["key"] for line in lines)
    assert keys and max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]
    assert set(keys) == {r.key for r in robots}
    assert {state for _, state, _ in listing} == {"sent"}
    assert len({line["pid"] for line in lines}) == 2, "both services sent some"


async def test_the_storm_is_the_same_alert_book_with_one_service(registry_url: str, tmp_path: Path) -> None:
    """The baseline the race test's counts are read against: one service alone, nobody acting."""
    sent = tmp_path / "sent.jsonl"
    finish(storm(registry_url, 3, sent))
    async with Registry(registry_url) as reg, reg.session() as s:
        alerts = (await s.scalars(select(AlertRow))).all()
    assert len(alerts) == alert_storm.SUBJECTS
    assert sum(a.state == "resolved" for a in alerts) == alert_storm.SUBJECTS // 2
    assert all(a.count == alert_storm.REPEATS + 1 for a in alerts)
