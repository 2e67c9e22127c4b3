"""Notifiers against a real local HTTP server: signature, mentions, rate limit, folding, retry, no duplicates."""

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from devices.estate import Estate
from rules.config import NotifyChannel
from rules.notify.dispatch import Dispatcher
from rules.notify.messages import Directory, message, wants
from rules.notify.robots import HttpRobot
from store.alerts import AlertStore, AlertView
from store.registry.db import Registry
from tests.store.test_alerts import Clock, snap
from tests.support.http_recorder import Recorder, http_recorder

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


@pytest.fixture
def robot_server() -> Iterator[Recorder]:
    with http_recorder() as recorder:
        yield recorder


@pytest.fixture
async def store(blank_registry_url: str) -> AsyncIterator[AlertStore]:
    async with Registry(blank_registry_url) as reg:
        yield AlertStore(reg)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


class Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def alert(store: AlertStore, subject: str = "smk-b001-u1-101", **over: Any) -> AlertView:
    applied = await store.apply(
        "opened",
        1000,
        snap(
            **{
                "rule": "fire",
                "subject": subject,
                "severity": "critical",
                "title": f"Smoke alarm {subject}",
                "unit": "b001-u1",
                "building": "b001",
                "recipients": ["worker:w01a", "contact:property_office", "radio:radio-01"],
                **over,
            }
        ),
    )
    assert applied is not None
    return applied.alert


def channel(url: str, **over: Any) -> NotifyChannel:
    return NotifyChannel.model_validate({"name": "wecom-g01", "kind": "wecom", "url": url, **over})


async def queue(store: AlertStore, ch: NotifyChannel, view: AlertView, small: Estate, action: str = "opened") -> None:
    msg = message(view, action, Directory(small), "http://estate.example/page")
    await store.outbox.enqueue_many([(f"{view.id}:{action}:{ch.name}", ch.name, view.id, msg)])


async def test_wecom_text_mentions_the_grid_worker_by_phone(
    robot_server: Recorder, store: AlertStore, http: httpx.AsyncClient, small: Estate
) -> None:
    ch = channel(robot_server.url + "/cgi-bin/webhook/send?key=k1")
    view = await alert(store)
    await queue(store, ch, view, small)
    assert await Dispatcher(HttpRobot(ch, http), store.outbox).run_once() == 1
    [req] = robot_server.requests
    assert req.path == "/cgi-bin/webhook/send" and req.query == {"key": "k1"}
    assert req.body["msgtype"] == "text"
    w01a = next(w.mobile for g in small.grids for w in g.workers if w.id == "w01a")
    office = next(c.mobile for c in small.contacts if c.role == "property_office")
    assert req.body["text"]["mentioned_mobile_list"] == sorted([w01a, office])
    assert "Smoke alarm smk-b001-u1-101" in req.body["text"]["content"]
    assert f"http://estate.example/page/alerts/{view.id}" in req.body["text"]["content"]
    assert req.headers["idempotency-key"] == f"{view.id}:opened:wecom-g01"


async def test_dingtalk_is_signed_with_its_secret_and_mentions_in_text(
    robot_server: Recorder, store: AlertStore, http: httpx.AsyncClient, small: Estate
) -> None:
    ch = channel(robot_server.url + "/robot/send?access_token=t1", name="ding", kind="dingtalk", secret="SEC123")
    view = await alert(store)
    await queue(store, ch, view, small)
    await Dispatcher(HttpRobot(ch, http), store.outbox).run_once()
    [req] = robot_server.requests
    ts = req.query["timestamp"]
    expected = base64.b64encode(hmac.new(b"SEC123", f"{ts}\nSEC123".encode(), hashlib.sha256).digest()).decode()
    assert req.query["sign"] == expected and req.query["access_token"] == "t1"
    mobiles = req.body["at"]["atMobiles"]
    assert mobiles and all(f"@{m}" in req.body["text"]["content"] for m in mobiles)


async def test_rate_limit_holds_and_a_burst_folds_into_one_summary_then_one_mention(
    robot_server: Recorder, store: AlertStore, http: httpx.AsyncClient, small: Estate
) -> None:
    ch = channel(robot_server.url, per_minute=3, fold_after=3)
    clock = Monotonic()
    dispatcher = Dispatcher(HttpRobot(ch, http), store.outbox, clock=clock)
    for i in range(2):
        await queue(store, ch, await alert(store, f"smk-{i}"), small)
    assert await dispatcher.run_once() == 1
    assert await dispatcher.run_once() == 1
    for i in range(2, 12):  # ten at once: a burst
        await queue(store, ch, await alert(store, f"smk-{i}"), small)
    assert await dispatcher.run_once() == 10
    assert [r.body["msgtype"] for r in robot_server.requests] == ["text", "text", "markdown"]
    assert robot_server.requests[2].body["markdown"]["content"].count("\n- ") == 10
    assert await dispatcher.run_once() == 0, "3 sent this minute: the mention waits"
    clock.t += 61
    assert await dispatcher.run_once() == 1
    mention = robot_server.requests[3].body
    assert mention["msgtype"] == "text" and mention["text"]["mentioned_mobile_list"]
    states = [s for _, s, _ in await store.outbox.listing(ch.name)]
    assert states.count("folded") == 10 and states.count("sent") == 3


async def test_failures_retry_with_backoff_and_permanent_ones_stop(
    robot_server: Recorder, store: AlertStore, http: httpx.AsyncClient, small: Estate
) -> None:
    ch = channel(robot_server.url)
    clock = Clock()
    store = AlertStore(store.registry, clock)
    metrics = CollectorRegistry()
    outcomes = Counter("rules_notifications", "", ["channel", "outcome"], registry=metrics)
    dispatcher = Dispatcher(HttpRobot(ch, http), store.outbox, outcomes=outcomes)
    await queue(store, ch, await alert(store), small)
    robot_server.script += [(502, {}), (200, {"errcode": 45009, "errmsg": "api freq out of limit"})]
    await dispatcher.run_once()
    assert await dispatcher.run_once() == 0, "backing off"
    clock.t += 3
    await dispatcher.run_once()
    clock.t += 10
    await dispatcher.run_once()
    assert [(s, n) for _, s, n in await store.outbox.listing(ch.name)] == [("sent", 2)]
    assert len(robot_server.requests) == 3

    await queue(store, ch, await alert(store, "smk-x"), small)
    robot_server.script.append((200, {"errcode": 93000, "errmsg": "invalid webhook url"}))
    await dispatcher.run_once()
    clock.t += 600
    await dispatcher.run_once()
    assert (await store.outbox.listing(ch.name))[-1][1] == "failed" and len(robot_server.requests) == 4
    counted = {
        outcome: metrics.get_sample_value("rules_notifications_total", {"channel": ch.name, "outcome": outcome})
        for outcome in ("retried", "sent", "failed")
    }
    assert counted == {"retried": 2.0, "sent": 1.0, "failed": 1.0}, "operators see it on /metrics"


async def test_no_duplicates_across_requeue_and_restart(
    robot_server: Recorder, store: AlertStore, http: httpx.AsyncClient, small: Estate
) -> None:
    ch = channel(robot_server.url, kind="webhook", name="ops")
    view = await alert(store)
    await queue(store, ch, view, small)
    await queue(store, ch, view, small)  # the same change again (a replay after restart)
    await Dispatcher(HttpRobot(ch, http), store.outbox).run_once()
    restarted = Dispatcher(HttpRobot(ch, http), store.outbox)
    assert await restarted.run_once() == 0
    [req] = robot_server.requests
    assert req.body["idempotency_key"] == f"{view.id}:opened:ops" and req.body["alerts"][0]["alert_id"] == view.id


async def test_channels_take_their_grids_and_severities(store: AlertStore) -> None:
    view = await alert(store)
    assert wants(channel("http://x", grids=["g01"]), view)
    assert not wants(channel("http://x", grids=["g02"]), view)
    assert not wants(channel("http://x", min_severity="critical"), await alert(store, "s2", severity="warning"))
