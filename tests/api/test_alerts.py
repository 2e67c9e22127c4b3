"""Alerts through the API: search and pages, one alert with its trail, acknowledge / resolve /
assign (registry, InfluxDB copy, MQTT), and the event stream filtered by grid."""

import asyncio
import json
from typing import Any

import pytest

from devices.alerts import Alert
from rules.service import RulesService
from store.alert_copies import MQTT_CHANNEL
from store.alerts import AlertStore
from store.registry.db import Registry
from tests.support import mqtt
from tests.support.api import RunningApi, Tokens
from tests.support.ingest import eventually, until
from tests.support.servers import Broker, InfluxServer

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


def snap(subject: str, **over: Any) -> Alert:
    return Alert.from_json({
            "rule": "fire", "subject": subject, "site": "small", "severity": "critical", "title": f"Fire {subject}",
            "first_ts": 1000, "last_ts": 1000, "state": "open", "count": 1, "escalation": 0, "grid": "g01",
            "building": "b001", "unit": "b001-u1", "zone": None, "recipients": [], "evidence": [{"ts": 1000}],
            "resolved_ts": None, **over})  # fmt: skip


async def seed(registry_url: str) -> list[int]:
    ids = []
    async with Registry(registry_url) as reg:
        store = AlertStore(reg)
        for i in range(5):
            ts = 1000 + i * 1000
            applied = await store.apply("opened", ts, snap(f"smk-{i}", first_ts=ts, last_ts=ts,
                                                           severity="critical" if i % 2 else "warning"))  # fmt: skip
            assert applied is not None
            ids.append(applied.alert.id)
        lane = snap("fl-09", rule="fire_lane", grid="g09", building="b009", last_ts=9000)
        other = await store.apply("opened", 9000, lane)
        assert other is not None
    return ids


async def test_search_filters_and_pages_newest_first(api: RunningApi, tokens: Tokens, registry_url: str) -> None:
    ids = await seed(registry_url)
    async with api.client(tokens.engineer) as c:
        everything = (await c.get("/api/v1/alerts")).json()
        assert everything["total"] == 6 and everything["items"][0]["subject"] == "fl-09"
        fire = (await c.get("/api/v1/alerts", params={"rule": "fire", "limit": 2, "offset": 1})).json()
        assert fire["total"] == 5 and [a["id"] for a in fire["items"]] == [ids[3], ids[2]]
        crit = (await c.get("/api/v1/alerts", params={"severity": "critical", "grid": "g01"})).json()
        assert {a["id"] for a in crit["items"]} == {ids[1], ids[3]}
        window = (await c.get("/api/v1/alerts", params={"since_ms": 2000, "until_ms": 4000})).json()
        assert {a["id"] for a in window["items"]} == {ids[1], ids[2]}
        assert (await c.get("/api/v1/alerts", params={"state": "resolved"})).json()["total"] == 0
        assert (await c.get("/api/v1/alerts", params={"building": "b001"})).json()["total"] == 5
    async with api.client(tokens.worker_g01) as c:
        assert (await c.get("/api/v1/alerts")).json()["total"] == 5, "only g01's"


async def test_acknowledge_resolve_assign_with_trail_copies_and_conflicts(
    api: RunningApi,
    tokens: Tokens,
    registry_url: str,
    broker: Broker,
    influxd: InfluxServer,
    influx_db: str,
    rules: RulesService,
) -> None:
    ids = await seed(registry_url)
    listener, heard = mqtt.subscribe(broker.port, "estate/v1/small/alerts/#", client_id="test-alerts")
    try:
        async with api.client(tokens.worker_g01) as c:
            acked = await c.post(f"/api/v1/alerts/{ids[0]}/acknowledge", json={"note": "on my way"})
            assert acked.status_code == 200, acked.text
            assert acked.json()["alert"]["state"] == "acknowledged"
            again = await c.post(f"/api/v1/alerts/{ids[0]}/acknowledge")
            assert again.status_code == 409 and again.json()["error"]["code"] == "wrong_state"
            assigned = await c.post(f"/api/v1/alerts/{ids[0]}/assign", json={"assignee": "w-g01-2"})
            assert assigned.json()["alert"]["assignee"] == "w-g01-2"
            resolved = await c.post(f"/api/v1/alerts/{ids[0]}/resolve", json={"note": "false alarm: cooking"})
            assert resolved.json()["alert"]["state"] == "resolved"
            assert (await c.post(f"/api/v1/alerts/{ids[0]}/resolve")).status_code == 409
            detail = (await c.get(f"/api/v1/alerts/{ids[0]}")).json()
        trail = [(e["action"], e["actor"], e["detail"].get("note")) for e in detail["audit"]]
        assert trail == [
            ("opened", "rules", None),
            ("acknowledged", "grid_worker:wang", "on my way"),
            ("assigned", "grid_worker:wang", None),
            ("resolved", "grid_worker:wang", "false alarm: cooking"),
        ]
        assert detail["alert"]["evidence"] == [{"ts": 1000}]
        def acted(r: mqtt.Recorder) -> list[str]:  # the seeded alerts' "opened" copies go out too
            return [a for _, p, _ in r.messages if (a := json.loads(p)["action"]) != "opened"]

        assert await eventually(lambda: len(acted(heard)) >= 3, 10)  # the rules service runs in this loop
        assert acted(heard) == ["acknowledged", "assigned", "resolved"]
    finally:
        mqtt.stop(listener)
    acked_rows = "SELECT * FROM alerts WHERE \"action\" = 'acknowledged'"
    assert await eventually(lambda: len(influxd.query(influx_db, acked_rows)) == 1, 10)
    rows = influxd.query(influx_db, acked_rows)
    assert len(rows) == 1 and rows[0]["ack_s"] is not None and rows[0]["grid"] == "g01"
    async with Registry(registry_url) as reg:
        view, _ = await AlertStore(reg).get(ids[0])
    assert view.state == "resolved" and view.assignee == "w-g01-2"


async def sent_all(registry_url: str) -> bool:
    """The rules service has sent every MQTT copy queued so far."""
    async with Registry(registry_url) as reg:
        return all(state == "sent" for _, state, _ in await AlertStore(reg).outbox.listing(MQTT_CHANNEL))


async def _collect(api: RunningApi, token: str, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with api.client(token) as c, c.stream("GET", "/api/v1/alerts/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith(": connected"):
                ready.set()
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


async def test_the_stream_sends_changes_of_the_callers_grids_only(
    api: RunningApi, tokens: Tokens, registry_url: str, rules: RulesService
) -> None:
    ids = await seed(registry_url)
    assert await until(lambda: sent_all(registry_url))  # the seeded openings are not what the streams hear
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    ready = [asyncio.Event(), asyncio.Event()]
    streams = [
        asyncio.create_task(_collect(api, tokens.worker_g01, mine, ready[0])),
        asyncio.create_task(_collect(api, tokens.worker_g02, theirs, ready[1])),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
        async with api.client(tokens.engineer) as c:
            assert (await c.post(f"/api/v1/alerts/{ids[1]}/acknowledge")).status_code == 200
        assert await eventually(lambda: len(mine) == 1, 10)
        assert mine[0]["id"] == ids[1] and mine[0]["action"] == "acknowledged" and mine[0]["grid"] == "g01"
        # Changes reach the streams in order: once g02's own change is there, g01's would have been.
        async with Registry(registry_url) as reg:
            g02 = await AlertStore(reg).apply("opened", 9500, snap("smk-g02", grid="g02", building="b002"))
        assert g02 is not None
        assert await eventually(lambda: len(theirs) == 1, 10)
        assert [(c["id"], c["action"]) for c in theirs] == [(g02.alert.id, "opened")], "nothing of g01"
        assert len(mine) == 1, "and a g01 worker nothing of g02"
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)


async def test_a_change_announced_on_the_broker_refreshes_the_lists(
    api: RunningApi, tokens: Tokens, registry_url: str, broker: Broker
) -> None:
    """Lists are answered from memory; the rules service's change notice on MQTT drops them."""
    await seed(registry_url)
    async with api.client(tokens.worker_g01) as c:
        assert (await c.get("/api/v1/alerts")).json()["total"] == 5
        async with Registry(registry_url) as reg:
            new = await AlertStore(reg).apply("opened", 20_000, snap("smk-new", last_ts=20_000))
        assert new is not None
        from tests.support.rules import Device

        rules = Device(broker, "small", client_id="test-rules")
        try:
            rules.raw("estate/v1/small/alerts/g01/fire/change", {"action": "opened", **new.alert.as_json()})
        finally:
            rules.close()
        totals: list[int] = []

        async def fresh() -> bool:
            totals.append((await c.get("/api/v1/alerts")).json()["total"])
            return totals[-1] == 6

        for _ in range(50):
            if await fresh():
                break
            await asyncio.sleep(0.1)
        assert totals[-1] == 6, totals


async def test_an_acknowledgement_while_the_broker_is_down_reaches_radios_and_influxdb_later(
    api: RunningApi,
    tokens: Tokens,
    registry_url: str,
    broker: Broker,
    influxd: InfluxServer,
    influx_db: str,
    rules: RulesService,
) -> None:
    """The action is in the alert book with its copies, in one transaction: the broker being away
    delays the radios' copy, it does not lose it (the API used to publish it and ignore the error)."""
    ids = await seed(registry_url)
    radio, heard = mqtt.subscribe(broker.port, "estate/v1/small/alerts/#", client_id="radio-g01", persistent=True)
    try:
        broker.stop()
        async with api.client(tokens.worker_g01) as c:
            acked = await c.post(f"/api/v1/alerts/{ids[0]}/acknowledge", json={"note": "on my way"})
        assert acked.status_code == 200, acked.text
        broker.start()
        def acks() -> list[dict[str, Any]]:
            return [d for _, p, _ in heard.messages if (d := json.loads(p))["action"] == "acknowledged"]

        assert await eventually(lambda: bool(acks()), 30)
        (doc,) = acks()
        assert doc["id"] == ids[0] and doc["state"] == "acknowledged"
    finally:
        mqtt.stop(radio)
    acked_rows = "SELECT alert_id FROM alerts WHERE \"action\" = 'acknowledged'"
    assert await eventually(lambda: len(influxd.query(influx_db, acked_rows)) == 1, 10)
    async with Registry(registry_url) as reg:
        unsent = [key for key, state, _ in await AlertStore(reg).outbox.listing(MQTT_CHANNEL) if state != "sent"]
    assert unsent == []
