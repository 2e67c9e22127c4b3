"""Bad messages against ingest, measured against ingest's own clean rate in the same run.

``estatewatch bench flood``: ingest's clean drain rate is measured first; then a live stream of valid
readings at a share of it (half, by default) runs through a fresh worker, and in its middle third one
device floods 10,000
bad messages at 1,000/s. Reported: valid points stored per second before and during the flood, every
bad message counted, nothing left unacknowledged, no poison redelivered after a restart, and the one
``invalid_payloads`` alert the rules raise (a rules service runs alongside, on a registry of its own).

``estatewatch bench ingest --poison-share F``: the same backlog drain with a share F of bad messages
among the valid ones; valid msg/s against the clean drain of the same run.
"""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.consumers import IngestWorker, fresh_database
from bench.publisher import publish, smoke_messages
from devices.catalog import MAX_PAYLOAD_BYTES
from devices.estate import load_estate
from devices.topics import device_topic
from devices.types import Channel, DeviceType
from runtime.settings import Settings, parse_mqtt_url
from stack.local import LocalStack
from stack.procs import free_port
from store.alerts import AlertStore
from store.influx import Influx
from store.registry.db import DeviceInfo, Registry

Say = Callable[[str], None]
DB = "estate_bench_flood"


def bad_payload(n: int) -> bytes:
    """Mostly malformed JSON and schema violations, one in a hundred over ingest's size limit."""
    if n % 100 == 0:
        return b"[" + b" " * (MAX_PAYLOAD_BYTES + 16) + b"]"
    if n % 2:
        return b'{"ts": 1, "seq": ' + str(n).encode()
    return json.dumps({"ts": int(time.time() * 1000), "seq": n, "state": "on fire"}).encode()


def mixed(valid: Iterator[tuple[str, bytes]], noisy_topic: str, share: float) -> Iterator[tuple[str, bytes]]:
    """Valid messages with a bad one from ``noisy_topic`` every 1/share messages."""
    every = max(1, round(1 / share)) if share else 0
    for n in itertools.count():
        if every and n % every == every - 1:
            yield noisy_topic, bad_payload(n)
        else:
            yield next(valid)


@dataclass
class FloodResults:
    capacity_msg_s: float = 0.0
    stream_msg_s: float = 0.0
    stream_share: float = 0.5
    valid_sent: int = 0
    offered_before_msg_s: float = 0.0
    offered_during_msg_s: float = 0.0
    poison: int = 0
    poison_rate_msg_s: float = 0.0
    before_points_s: float = 0.0
    during_points_s: float = 0.0
    rejects_counted: int = 0
    rejects_metric: int = 0
    inflight_after: int = 0
    redelivered_after_restart: int = 0
    rejects_after_restart: int = 0
    alerts_raised: int = 0
    lost: int = 0

    @property
    def ratio(self) -> float:
        return self.during_points_s / self.before_points_s if self.before_points_s else 0.0


async def _stored(influx: Influx, q: str) -> int:
    rows = (await influx.query(q))[0]
    return int(rows[0].values[0][1] or 0) if rows else 0


async def _at_least(influx: Influx, q: str, n: int) -> bool:
    return await _stored(influx, q) >= n


async def _until(check: Callable[[], Awaitable[bool]], within_s: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + within_s
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


def _metric(worker: IngestWorker, prefix: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _flood(stack: LocalStack, topic: str, count: int, rate: float) -> float:
    """From one device's topic, paced, QoS 1, by mosquitto_pub in a process of its own (so the flood
    takes nothing from the valid stream's publisher); returns once it has exited (all acknowledged)."""
    mqtt = stack.settings.mqtt
    args = [
        "mosquitto_pub",
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-l",
        "-t",
        topic,
        "-i",
        f"bench-flood-{os.getpid()}",
        "-h",
        mqtt.host,
        "-p",
        str(mqtt.port),
        "-u",
        "simulator",
        "-P",
        stack.credentials()["simulator"],
    ]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    started = time.perf_counter()
    for n in range(count):
        proc.stdin.write(bad_payload(n) + b"\n")
        ahead = started + (n + 1) / rate - time.perf_counter()
        if ahead > 0:
            proc.stdin.flush()
            time.sleep(ahead)
    proc.stdin.close()
    if proc.wait(120) != 0:
        raise RuntimeError(f"mosquitto_pub exited {proc.returncode}")
    return count / (time.perf_counter() - started)


async def _rules_registry(settings: Settings, folder: Path) -> str:
    url = f"sqlite+aiosqlite:///{folder / 'registry.db'}"
    async with Registry(url) as reg:
        await reg.load_estate(load_estate(settings.estate_file))
    return url


def _rules_process(stack: LocalStack, registry_url: str, folder: Path) -> subprocess.Popen[bytes]:
    """A rules service of the run's own (own registry, client id and database), as a process."""
    port = free_port()
    env = {
        **os.environ, **stack.service_env("rules"),
        "ESTATEWATCH_INFLUX_DATABASE": DB, "ESTATEWATCH_DB_URL": registry_url,
        "ESTATEWATCH_RULES_CLIENT_ID": f"bench-flood-rules-{os.getpid()}", "ESTATEWATCH_RULES_METRICS_PORT": str(port),
        "ESTATEWATCH_RULES_REBUILD_S": "0", "ESTATEWATCH_RULES_SESSION_EXPIRY_S": "60",
        "ESTATEWATCH_LOG_LEVEL": "WARNING", "ESTATEWATCH_LOG_FORMAT": "text",
    }  # fmt: skip
    log = (folder / "rules.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "estatewatch", "rules", "run"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bench's rules service exited {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the bench's rules service did not become healthy")


async def _capacity(stack: LocalStack, valid: list[DeviceInfo], count: int) -> float:
    """One worker's clean drain rate of a backlog, in this run: what the live stream is paced against."""
    worker = IngestWorker(stack, DB, "bench-flood-cap")
    worker.start()
    worker.stop()
    await publish(parse_mqtt_url(stack.mqtt_url("simulator")), smoke_messages(valid, int(time.time() * 1000) - count),
                  count, client_prefix="bench-flood-cap")  # fmt: skip
    worker.start()
    started = time.perf_counter()

    async def drained() -> bool:
        return _metric(worker, "ingest_points_written_total") >= count

    await _until(drained, 300, every=0.05)
    rate = count / (time.perf_counter() - started)
    worker.stop()
    return rate


async def run_flood(
    settings: Settings, poison: int, rate: float, seconds: float, share: float, say: Say
) -> FloodResults:
    stack = LocalStack(settings)
    async with Registry(settings.db_url) as reg:
        devices = await reg.devices(device_type=DeviceType.SMOKE_SENSOR)
    if len(devices) < 2:
        raise RuntimeError("no smoke sensors in the registry: run 'estatewatch registry init' first")
    noisy, valid = devices[0], devices[1:1001]
    noisy_topic = device_topic(noisy.site, DeviceType.SMOKE_SENSOR, noisy.id, Channel.TELEMETRY)
    results = FloodResults(poison=poison, stream_share=share)
    await fresh_database(settings, DB)
    say("  ingest's clean drain rate in this run (100,000 messages)")
    results.capacity_msg_s = await _capacity(stack, valid, 100_000)
    results.stream_msg_s = share * results.capacity_msg_s
    say(
        f"  {results.capacity_msg_s:,.0f} msg/s; a live stream at {share:.0%} of it for {seconds:.0f} s, "
        f"the flood from {seconds / 3:.0f} s"
    )
    await fresh_database(settings, DB)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        rules = _rules_process(stack, await _rules_registry(settings, Path(tmp)), Path(tmp))
        worker = IngestWorker(stack, DB, "bench-flood")
        try:
            worker.start()
            async with Influx(settings.influx_url, DB) as influx:
                await _live(stack, worker, valid, noisy_topic, results, rate, seconds, say)
                counts = 'SELECT sum("count") FROM "rejects"."ingest_reject_counts"'
                await _until(lambda: _at_least(influx, counts, poison), 30)
                results.rejects_counted = await _stored(influx, counts)
                results.rejects_metric = int(_metric(worker, "ingest_rejects_total{"))
                await _until(lambda: _at_least(influx, "SELECT count(seq) FROM smoke_sensor", results.valid_sent), 30)
                results.lost = results.valid_sent - await _stored(influx, "SELECT count(seq) FROM smoke_sensor")
                results.inflight_after = int(_metric(worker, "ingest_inflight_messages"))
                async with Registry(_registry_of(tmp)) as reg:
                    _, results.alerts_raised = await AlertStore(reg).search(rule="invalid_payloads", subject=noisy.id)
                worker.stop()
                worker.start()  # a restart: the broker hands it whatever was left unacknowledged, then the marker
                marker = smoke_messages([valid[0]], int(time.time() * 1000), first_seq=10**9)
                await publish(parse_mqtt_url(stack.mqtt_url("simulator")), marker, 1, client_prefix="bench-marker")
                marked = f"SELECT count(seq) FROM smoke_sensor WHERE seq = {10**9}"
                await _until(lambda: _at_least(influx, marked, 1), 30)
                results.redelivered_after_restart = int(_metric(worker, "ingest_redeliveries_total"))
                results.rejects_after_restart = int(_metric(worker, "ingest_rejects_total{"))
        finally:
            worker.stop()
            rules.terminate()
            rules.wait(30)
    return results


def _registry_of(folder: str) -> str:
    return f"sqlite+aiosqlite:///{Path(folder) / 'registry.db'}"


async def _live(
    stack: LocalStack, worker: IngestWorker, valid: list[DeviceInfo], noisy_topic: str, results: FloodResults,
    rate: float, seconds: float, say: Say,
) -> None:  # fmt: skip
    """The paced valid stream, the flood in its middle third, and ingest's store rate sampled throughout."""
    samples: list[tuple[float, float]] = []
    window: list[float] = []

    def flood_now() -> None:
        window.append(time.perf_counter())
        results.poison_rate_msg_s = _flood(stack, noisy_topic, results.poison, rate)
        window.append(time.perf_counter())

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter(), _metric(worker, "ingest_points_written_total")))
            await asyncio.sleep(0.25)

    async def flood_later() -> None:
        await asyncio.sleep(seconds / 3)
        say("  flood of bad messages starts")
        await asyncio.to_thread(flood_now)

    count = int(results.stream_msg_s * seconds)
    offered: list[float] = []  # when each 100th valid message was handed to the publisher

    def counted(messages: Iterator[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
        for n, message in enumerate(messages):
            if n % 100 == 0:
                offered.append(time.perf_counter())
            yield message

    sampler, flooder = asyncio.create_task(sample()), asyncio.create_task(flood_later())
    begun = time.perf_counter()
    try:
        stream = counted(smoke_messages(valid, int(time.time() * 1000)))
        target = parse_mqtt_url(stack.mqtt_url("simulator"))
        sent = await publish(target, stream, count, rate=results.stream_msg_s, client_prefix="bench-flood-live")
        await flooder
    finally:
        sampler.cancel()
    results.valid_sent = sent.sent
    results.stream_msg_s = sent.rate
    results.before_points_s = _rate(samples, begun + 2, window[0])
    results.during_points_s = _rate(samples, window[0], window[1])
    results.offered_before_msg_s = 100 * sum(1 for t in offered if begun + 2 <= t < window[0]) / (window[0] - begun - 2)
    results.offered_during_msg_s = 100 * sum(1 for t in offered if window[0] <= t < window[1]) / (window[1] - window[0])


def _rate(samples: list[tuple[float, float]], start: float, end: float) -> float:
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def report_flood(r: FloodResults) -> str:
    rows = [
        ("ingest clean drain rate (this run)", f"{r.capacity_msg_s:,.0f} msg/s"),
        ("live valid stream", f"{r.valid_sent:,} messages at {r.stream_msg_s:,.0f} msg/s, lost {r.lost}"),
        ("bad messages from one device", f"{r.poison:,} at {r.poison_rate_msg_s:,.0f}/s"),
        (
            "valid stored before the flood (offered)",
            f"{r.before_points_s:,.0f} points/s ({r.offered_before_msg_s:,.0f})",
        ),
        (
            "valid stored during the flood (offered)",
            f"{r.during_points_s:,.0f} points/s ({r.offered_during_msg_s:,.0f}); {r.ratio:.2f} of before",
        ),
        ("rejects counted (InfluxDB / metric)", f"{r.rejects_counted:,} / {r.rejects_metric:,}"),
        ("messages unacknowledged after the drain", f"{r.inflight_after}"),
        ("after a restart: redelivered / rejected again", f"{r.redelivered_after_restart} / {r.rejects_after_restart}"),
        ("invalid_payloads alerts raised", f"{r.alerts_raised}"),
    ]
    return "\n".join(["", "| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])


def save_flood(r: FloodResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**asdict(r), "ratio": r.ratio}, indent=1))


async def poisoned_drain(
    stack: LocalStack, devices: list[DeviceInfo], count: int, share: float, say: Say
) -> tuple[float, int]:
    """Valid msg/s of a backlog with ``share`` bad messages; (rate, valid messages lost)."""
    db = "estate_bench_poison"
    await fresh_database(stack.settings, db)
    worker = IngestWorker(stack, db, "bench-poison")
    worker.start()
    worker.stop()
    noisy, valid = devices[0], devices[1:]
    topic = device_topic(noisy.site, DeviceType.SMOKE_SENSOR, noisy.id, Channel.TELEMETRY)
    stream = mixed(smoke_messages(valid, int(time.time() * 1000) - count), topic, share)
    messages = list(itertools.islice(stream, count))
    bad = sum(1 for t, _ in messages if t == topic)
    await publish(parse_mqtt_url(stack.mqtt_url("simulator")), iter(messages), count, client_prefix="bench-poison-pub")
    say(f"  {count - bad:,} valid and {bad:,} bad messages queued; starting ingest")
    worker.start()
    started = time.perf_counter()
    async with Influx(stack.settings.influx_url, db) as influx:

        async def drained() -> bool:
            if _metric(worker, "ingest_rejects_total{") < bad or _metric(worker, "ingest_points_written") < count - bad:
                return False
            return await _at_least(influx, "SELECT count(seq) FROM smoke_sensor", count - bad)

        await _until(drained, 600, every=0.05)
        elapsed = time.perf_counter() - started
        stored = await _stored(influx, "SELECT count(seq) FROM smoke_sensor")
    worker.stop()
    return (count - bad) / elapsed, count - bad - stored
