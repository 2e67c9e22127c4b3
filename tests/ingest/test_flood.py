"""A flood of bad messages from one device amid the estate's valid traffic (issue: a flood must not
wedge ingest). Every bad message is counted once and acknowledged once its record is stored; the
first few a minute are kept whole; valid readings are all stored; the rules raise one maintenance
alert; an engineer sees it all through the API; and a restart receives none of the poison again."""

import asyncio
from pathlib import Path

from devices.estate import Estate
from devices.notices import NoisyDevice, noisy_topic
from sim.runner import Simulator
from store.alerts import AlertStore
from store.registry.db import Registry
from tests.support.api import api_settings, make_tokens, running_api
from tests.support.flood import flood
from tests.support.http_recorder import http_recorder
from tests.support.ingest import eventually, until, wait_until_stored
from tests.support.mqtt import stop, subscribe
from tests.support.pipeline import Factory, simulate
from tests.support.rules import Device, rules_settings
from tests.support.servers import PASSWORD, Broker, InfluxServer

NOISY = "smk-b001-u1-101"
BAD = 3000
BUDGET = 50


def _total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


async def test_a_poison_flood_is_counted_once_acknowledged_and_not_redelivered(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate,
    registry_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    from rules.service import RulesService

    worker = ingest_factory("ingest-flood", ESTATEWATCH_INGEST_REJECT_BUDGET_PER_MIN=str(BUDGET)).start()
    reports_client, reports = subscribe(broker.port, noisy_topic("small"), client_id="noisy-reports")
    topic = f"estate/v1/small/smoke_sensor/{NOISY}/telemetry"
    with http_recorder() as hook:
        settings = rules_settings(broker, influxd.url, influx_db, registry_url, tmp_path, small, hook.url,
                                  rules_rebuild_s=0)  # fmt: skip
        async with RulesService(settings):

            async def poison(sim: Simulator) -> None:
                assert await eventually(lambda: sim.stats.acked > 0, 20)  # the flood joins a running estate
                result = await asyncio.to_thread(
                    flood, broker.port, "simulator", PASSWORD, topic, BAD, 1000.0, client_id="flood"
                )
                assert result.sent == BAD

            sent = await simulate(small, broker, 6, speed=60, rate_scale=4, during=poison)
            wait_until_stored(influxd, influx_db, "small", sent)

            def counted() -> float:
                rows = influxd.query(influx_db, 'SELECT sum("count") FROM "rejects"."ingest_reject_counts"')
                return float(str(rows[0]["sum"])) if rows else 0.0

            assert await eventually(lambda: counted() >= BAD, 20), counted()
            assert counted() == BAD  # every bad message counted once, nothing else rejected

            def settled() -> bool:  # the simulator's last statuses may still be in flight
                m = worker.metrics()
                return m["ingest_inflight_messages"] == 0 and _total(m, "ingest_acknowledged_total{") == _total(
                    m, "ingest_messages_total{"
                )

            assert await eventually(settled, 20)
            metrics = worker.metrics()
            assert _total(metrics, "ingest_rejects_total{") == BAD
            assert metrics['ingest_acknowledged_total{outcome="rejected"}'] == BAD
            assert _total(metrics, "ingest_acknowledged_total{") == _total(metrics, "ingest_messages_total{")
            assert metrics["ingest_inflight_messages"] == 0
            assert metrics["ingest_handler_errors_total"] == 0
            assert metrics['ingest_notices_total{outcome="dropped"}'] == 0
            # Kept whole: the budget's worth per minute the flood touched (one or two minutes).
            kept = influxd.query(influx_db, 'SELECT count("payload_bytes") FROM "rejects"."ingest_rejects"')
            assert BUDGET <= int(str(kept[0]["count"])) <= 2 * BUDGET
            assert metrics["ingest_rejects_counted_only_total"] == BAD - int(str(kept[0]["count"]))

            # The device was reported noisy; the rules raised one alert for it.
            assert reports.wait_for(lambda r: bool(r.messages), 10)  # as it crossed the budget
            stop(reports_client)
            report = NoisyDevice.model_validate_json(reports.messages[0][1])
            assert report.device_id == NOISY and report.total == BUDGET + 1 and not report.final
            async with Registry(registry_url) as reg:
                store = AlertStore(reg)

                async def raised() -> bool:
                    return bool((await store.search(rule="invalid_payloads"))[1])

                assert await until(raised, 20)
                found, total = await store.search(rule="invalid_payloads")
                assert total == 1 and found[0].subject == NOISY and found[0].state == "open"
                assert found[0].severity == "warning" and "invalid payloads" in found[0].title

    # What the engineer sees through the API.
    tokens = await make_tokens(registry_url)
    settings = api_settings(broker, influxd.url, influx_db, registry_url, tmp_path)
    async with running_api(settings) as api, api.client(tokens.engineer) as c:
        r = await c.get(f"/api/v1/devices/small/{NOISY}/rejects")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == BAD and set(body["by_reason"]) == {"bad_json", "schema", "too_large"}
    assert len(body["recent"]) == 20 and body["recent"][0]["payload"]
    assert body["alert"]["rule"] == "invalid_payloads" and body["alert"]["subject"] == NOISY

    # A restart after the flood: no poison comes back (every bad message was acknowledged).
    assert worker.terminate() == 0
    worker.start()
    marker = Device(broker, "small", client_id="marker")
    try:
        marker.send("power_meter", "pm-b001-u1", "telemetry", seq=10_000_000, ts=_now(), power_w=1.0,
                    voltage_v=220.0, current_a=0.1, energy_wh=1.0)  # fmt: skip
    finally:
        marker.close()
    q = "SELECT seq FROM power_meter WHERE seq = 10000000"
    assert await eventually(lambda: bool(influxd.query(influx_db, q)), 20)
    after = worker.metrics()
    assert _total(after, "ingest_rejects_total{") == 0
    assert after["ingest_redeliveries_total"] == 0


def _now() -> int:
    import time

    return int(time.time() * 1000)
