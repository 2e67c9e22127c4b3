"""Faults: workers killed, InfluxDB away or misbehaving, the broker restarted. Nothing acknowledged is lost."""

import asyncio
import time
from pathlib import Path

from devices.estate import Estate
from sim.runner import Simulator
from tests.support.faults import FaultProxy
from tests.support.ingest import eventually, wait_until_stored
from tests.support.pipeline import Factory, after_published, simulate
from tests.support.rules import Device
from tests.support.servers import Broker, InfluxServer, start_influx


async def test_kill_9_mid_stream_then_restart(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    worker = ingest_factory("ingest-k").start()

    async def crash(sim: Simulator) -> None:
        await after_published(sim, 400)
        worker.kill()
        await after_published(sim, 300)  # queued for the dead worker's session meanwhile
        await asyncio.to_thread(worker.start)

    sent = await simulate(small, broker, 8, speed=60, rate_scale=4, during=crash)
    wait_until_stored(influxd, influx_db, "small", sent)


async def test_sigterm_drains_and_exits_cleanly(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    worker = ingest_factory("ingest-t").start()
    codes: list[int] = []

    async def restart(sim: Simulator) -> None:
        await after_published(sim, 400)
        started = time.monotonic()
        codes.append(await asyncio.to_thread(worker.terminate))
        assert time.monotonic() - started < 25
        await asyncio.to_thread(worker.start)

    sent = await simulate(small, broker, 7, speed=60, rate_scale=4, during=restart)
    wait_until_stored(influxd, influx_db, "small", sent)
    assert codes == [0]


async def test_two_workers_share_the_load_and_one_is_killed(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    a = ingest_factory("ingest-a", ESTATEWATCH_INGEST_SHARE_GROUP="ingest").start()
    b = ingest_factory("ingest-b", ESTATEWATCH_INGEST_SHARE_GROUP="ingest").start()

    async def kill_b(sim: Simulator) -> None:
        await after_published(sim, 400)
        b.kill()

    sent = await simulate(small, broker, 7, speed=60, rate_scale=4, during=kill_b)
    # Mosquitto keeps routing the group's share to b's persistent session while it is away;
    # b's return collects it (docs/ingest.md).
    b.start()
    wait_until_stored(influxd, influx_db, "small", sent)
    got_a = a.metrics()["ingest_points_written_total"]
    got_b = b.metrics()["ingest_points_written_total"]
    assert got_a > 0 and got_b > 0, "both workers took a share"


async def test_broker_restart_with_persistence(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    """SIGTERM to Mosquitto mid-stream, with a plain subscription: the broker keeps the worker's session,
    subscription and queue across the restart, and nothing is lost. (Mosquitto 2.0 does not persist
    shared subscriptions: see docs/ingest.md for what that costs a shared group.)"""
    ingest_factory("ingest-r").start()  # the default: a plain subscription

    async def restart(sim: Simulator) -> None:
        await after_published(sim, 400)
        await asyncio.to_thread(broker.stop)
        # Devices queue while the broker is away (gmqtt keeps what was not acknowledged).
        await asyncio.to_thread(broker.start)

    sent = await simulate(small, broker, 9, speed=60, rate_scale=4, during=restart)
    wait_until_stored(influxd, influx_db, "small", sent, timeout=60)


async def test_influxd_down_under_load_spools_then_replays(
    broker: Broker, ingest_factory: Factory, small: Estate, influx_db: str, tmp_path: Path
) -> None:
    own = start_influx(tmp_path / "own-influxd")
    own.create_database(influx_db)
    worker = ingest_factory("ingest-s", influx_url=own.url, ESTATEWATCH_INGEST_SPOOL_AFTER_S="0.5").start()
    rss: list[float] = []
    spooled: list[float] = []

    async def outage(sim: Simulator) -> None:
        await after_published(sim, 300)
        await asyncio.to_thread(own.stop)
        for _ in range(8):  # the outage lasts while the simulator publishes 8 x 150 more
            await after_published(sim, 150)
            rss.append(worker.rss_mb())
        spooled.append(worker.metrics()["ingest_points_spooled_total"])
        await asyncio.to_thread(own.start)

    try:
        sent = await simulate(small, broker, 9, speed=60, rate_scale=6, during=outage)
        wait_until_stored(own, influx_db, "small", sent, timeout=60)
    finally:
        own.stop()
    assert spooled[0] > 0, "the outage was bridged by the spool"
    assert max(rss) < 150, f"ingest RSS during the outage: {max(rss):.0f} MB"
    assert worker.metrics()["ingest_spool_bytes"] == 0


async def test_retry_after_429_and_503_is_honoured(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    answers = iter([(429, {"Retry-After": "1"}, b"slow down"), (503, {"Retry-After": "0.5"}, b"busy")] * 3)
    proxy = FaultProxy(influxd.url, fault=lambda body: next(answers, None))
    proxy.start()
    try:
        worker = ingest_factory("ingest-429", influx_url=proxy.url, ESTATEWATCH_INGEST_SPOOL_AFTER_S="10").start()
        sent = await simulate(small, broker, 4, speed=60)
        wait_until_stored(influxd, influx_db, "small", sent)
    finally:
        proxy.stop()
    statuses = [s for s, _ in proxy.writes]
    assert statuses[:6] == [429, 503] * 3 and 204 in statuses
    assert worker.metrics()["ingest_points_spooled_total"] == 0, "Retry-After within the budget: no spooling"


async def test_413_splits_the_batch(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    limit = 2000
    proxy = FaultProxy(influxd.url, fault=lambda body: (413, {}, b"too large") if len(body) > limit else None)
    proxy.start()
    try:
        ingest_factory("ingest-413", influx_url=proxy.url, ESTATEWATCH_INGEST_BATCH_MS="500").start()
        sent = await simulate(small, broker, 4, speed=60, rate_scale=4)
        wait_until_stored(influxd, influx_db, "small", sent)
    finally:
        proxy.stop()
    assert any(s == 413 for s, _ in proxy.writes) and all(n <= limit for s, n in proxy.writes if s == 204)


async def test_a_line_influxdb_refuses_is_rejected_and_the_rest_stored(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    poisoned = b"device_id=smk-b001-u1-101,"

    def conflicts(line: bytes) -> bool:  # one sensor's readings have a field type InfluxDB refuses
        return line.startswith(b"smoke_sensor,") and poisoned in line

    def partial_write(body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        lines = body.split(b"\n")
        if not any(conflicts(line) for line in lines):
            return None
        good = b"\n".join(line for line in lines if not conflicts(line))
        if good:  # as InfluxDB 1.x does: the good lines are stored, the answer is 400
            import urllib.request

            urllib.request.urlopen(
                urllib.request.Request(f"{influxd.url}/write?db={influx_db}&precision=ns", data=good, method="POST"),
                timeout=10,
            ).close()
        return 400, {}, b'{"error":"partial write: field type conflict"}'

    proxy = FaultProxy(influxd.url, fault=partial_write)
    proxy.start()
    try:
        worker = ingest_factory("ingest-400", influx_url=proxy.url).start()
        sent = await simulate(small, broker, 4, speed=60, rate_scale=2)
        poisoned_sent = sent.pop("smk-b001-u1-101")
        wait_until_stored(influxd, influx_db, "small", sent)
    finally:
        proxy.stop()
    refused = 'ingest_rejects_total{reason="influx_refused"}'
    await eventually(lambda: worker.metrics().get(refused, 0) >= 1)
    assert worker.metrics()['ingest_rejects_total{reason="influx_refused"}'] >= poisoned_sent >= 1
    rows = influxd.query(
        influx_db, """SELECT count(payload_bytes) FROM "rejects"."ingest_rejects" WHERE reason = 'influx_refused'"""
    )
    assert rows and rows[0]["count"] >= 1


async def test_a_hanging_influxdb_is_spooled_around(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    hanging = {"on": True}
    proxy = FaultProxy(influxd.url, fault=lambda body: "hang" if hanging["on"] else None)
    proxy.start()
    try:
        worker = ingest_factory(
            "ingest-hang",
            influx_url=proxy.url,
            ESTATEWATCH_INGEST_WRITE_TIMEOUT_S="1",
            ESTATEWATCH_INGEST_SPOOL_AFTER_S="1",
        ).start()

        async def recover(sim: Simulator) -> None:
            # Hanging until the worker has spooled (its writes timed out) and more has come since.
            assert await eventually(lambda: worker.metrics()["ingest_points_spooled_total"] > 0, 30)
            await after_published(sim, 50)
            hanging["on"] = False

        sent = await simulate(small, broker, 6, speed=60, during=recover)
        wait_until_stored(influxd, influx_db, "small", sent)
    finally:
        proxy.stop()
    assert worker.metrics()["ingest_points_spooled_total"] > 0


async def test_an_unwritable_spool_holds_acknowledgements_and_recovers_by_itself(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, tmp_path: Path
) -> None:
    """InfluxDB away and the spool unwritable: nothing is acknowledged, /healthz says why, and once
    the spool can be written again the worker spools (and acknowledges) without a restart."""
    import shutil
    import urllib.error
    import urllib.request

    down = {"on": False}
    proxy = FaultProxy(influxd.url, fault=lambda body: (503, {}, b"down") if down["on"] else None)
    proxy.start()
    spool = tmp_path / "spool-x"
    try:
        worker = ingest_factory(
            "ingest-spool", influx_url=proxy.url, ESTATEWATCH_INGEST_SPOOL_AFTER_S="0.5",
            ESTATEWATCH_INGEST_SPOOL_DIR=str(spool),
        ).start()  # fmt: skip

        def health() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/healthz", timeout=2) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        down["on"] = True
        shutil.rmtree(spool)
        spool.write_text("a file where the spool folder was: every write fails")
        devices = Device(broker, "small", client_id="spool-devices")
        try:
            for n in range(1, 21):
                devices.send("power_meter", "pm-b001-u1", "telemetry", seq=n, ts=int(time.time() * 1000),
                             power_w=1.0, voltage_v=220.0, current_a=0.1, energy_wh=1.0)  # fmt: skip
        finally:
            devices.close()
        assert await eventually(lambda: health()[0] == 503, 20)
        _, text = health()
        assert "not acknowledging" in text and "unwritable" in text, text
        metrics = worker.metrics()
        assert metrics["ingest_inflight_messages"] == 20
        assert metrics['ingest_acknowledged_total{outcome="spooled"}'] == 0
        assert metrics['ingest_acknowledged_total{outcome="stored"}'] == 0

        spool.unlink()
        spool.mkdir()  # writable again: the worker notices by itself
        assert await eventually(lambda: worker.metrics()["ingest_inflight_messages"] == 0, 20)
        assert worker.metrics()['ingest_acknowledged_total{outcome="spooled"}'] == 20
        assert await eventually(lambda: health()[0] == 200, 10)
        down["on"] = False
        wait_until_stored(influxd, influx_db, "small", {"pm-b001-u1": 20})
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        proxy.stop()


def test_a_worker_whose_task_dies_exits_non_zero(ingest_factory: Factory, tmp_path: Path) -> None:
    """A supervisor must tell a crash from a stop: the registry turned into something that is not a
    database kills the refresh task, and the worker exits 1 saying which task failed."""
    db = tmp_path / "registry-copy.db"
    import shutil

    shutil.copy(tmp_path / "registry.db", db)
    worker = ingest_factory(
        "ingest-dies", ESTATEWATCH_DB_URL=f"sqlite+aiosqlite:///{db}", ESTATEWATCH_INGEST_REGISTRY_REFRESH_S="0.5"
    ).start()
    db.write_bytes(b"this is not a database" * 100)
    assert worker.proc is not None
    assert worker.proc.wait(30) == 1
    log = worker.log.read_text()
    assert "registry-refresh failed" in log and "stopped because task registry-refresh failed" in log, log[-2000:]


async def test_killed_after_the_store_before_its_pubacks_redelivery_overwrites(
    broker: Broker, influxd: InfluxServer, influx_db: str, ingest_factory: Factory, small: Estate
) -> None:
    """Batches stored, their PUBACKs never reach the broker (cut on the way), the worker killed: the
    broker sends every one of them again, and storing them again overwrites: nothing doubled."""
    from tests.support.servers import PASSWORD
    from tests.support.tcp_proxy import TcpProxy

    proxy = TcpProxy(broker.port).start()
    try:
        via_proxy = ingest_factory("ingest-p", ESTATEWATCH_MQTT_URL=proxy.url("service", PASSWORD)).start()
        proxy.cut_up()
        sent = await simulate(small, broker, 5, speed=60, rate_scale=4)
        wait_until_stored(influxd, influx_db, "small", sent)  # stored; acknowledged to no one
        # Every message was settled and its PUBACK written: into the cut.
        assert await eventually(lambda: via_proxy.metrics()["ingest_inflight_messages"] == 0)
        acked = via_proxy.metrics()['ingest_acknowledged_total{outcome="stored"}']
        assert acked > 0 and proxy.dropped_bytes >= 4 * acked
        via_proxy.kill()
        proxy.restore_up()
        again = ingest_factory("ingest-p").start()  # the same session, straight to the broker
        assert await eventually(lambda: again.metrics()["ingest_redeliveries_total"] >= acked, 30), (
            f"{again.metrics()['ingest_redeliveries_total']} of {acked} redelivered"
        )
        assert await eventually(lambda: again.metrics()["ingest_inflight_messages"] == 0, 30)
        wait_until_stored(influxd, influx_db, "small", sent)  # every seq once: overwritten, not doubled
    finally:
        proxy.stop()
