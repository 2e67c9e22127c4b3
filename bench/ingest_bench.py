"""``estatewatch bench ingest``: ingest's sustained rate and latency against the raw limits of the
broker and InfluxDB, all measured in one run on the local stack.

1. broker drain: messages queued for an offline mosquitto_sub session, then drained by it (QoS 1)
2. InfluxDB raw write: pre-built line-protocol batches of ingest's shape, as many writers as ingest
3. ingest sustained: the same number of device messages queued for ingest's offline session, then
   drained by a fresh ingest worker; rate = messages / time until InfluxDB holds every point
4. latency: a paced stream at 70 % of that rate, with a probe device; publish-to-queryable p50/p99
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.procstat import sample
from bench.publisher import Publisher, publish, smoke_messages
from devices.topics import ROOT
from runtime.settings import Settings, parse_mqtt_url
from stack.local import LocalStack
from stack.procs import free_port
from store.influx import Influx
from store.registry.db import DeviceInfo, Registry

Say = Callable[[str], None]


@dataclass
class Results:
    messages: int
    workers: int = 1
    broker_drain_msg_s: float = 0.0
    influx_write_points_s: float = 0.0
    ingest_msg_s: float = 0.0
    ingest_points_s: float = 0.0
    ingest_cpu_pct: float = 0.0
    ingest_peak_rss_mb: float = 0.0
    latency_rate_msg_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_probes: int = 0
    lost: int = 0
    poison_share: float = 0.0
    poisoned_valid_msg_s: float = 0.0
    poisoned_lost: int = 0

    def ratios(self) -> dict[str, float]:
        poisoned = (
            {f"valid msg/s with {self.poison_share:.0%} bad / clean": self.poisoned_valid_msg_s / self.ingest_msg_s}
            if self.poison_share and self.ingest_msg_s
            else {}
        )
        return poisoned | {
            "ingest / broker drain": self.ingest_msg_s / self.broker_drain_msg_s if self.broker_drain_msg_s else 0,
            "ingest / InfluxDB write": self.ingest_points_s / self.influx_write_points_s
            if self.influx_write_points_s
            else 0,
        }


def _mosq(args: list[str], stack: LocalStack, user: str = "ingest") -> list[str]:
    mqtt = stack.settings.mqtt
    return [*args, "-h", mqtt.host, "-p", str(mqtt.port), "-u", user, "-P", stack.credentials()[user]]


async def broker_drain(stack: LocalStack, count: int, say: Say) -> float:
    topic = f"{ROOT}/_bench/drain"  # outside every device subscription: the broker alone is measured
    session = ["mosquitto_sub", "-V", "mqttv5", "-c", "-x", "600", "-i", "bench-drain", "-q", "1", "-t", topic]
    # Create the session, then leave it offline while the queue fills.
    await asyncio.to_thread(
        subprocess.run, _mosq([*session, "-C", "1", "-W", "1"], stack), capture_output=True, check=False
    )
    payload = b'{"ts":1764590400000,"seq":1,"state":"normal","smoke_obscuration_pct":0.2,"temp_c":21.5}'
    target = parse_mqtt_url(stack.mqtt_url("ingest"))
    await publish(target, iter((topic, payload) for _ in range(count)), count, client_prefix="bench-drain-pub")
    say(f"  {count:,} messages queued for mosquitto_sub; draining")
    started = time.perf_counter()
    await asyncio.to_thread(
        subprocess.run, _mosq([*session, "-C", str(count)], stack), stdout=subprocess.DEVNULL, check=True, timeout=600
    )
    return count / (time.perf_counter() - started)


async def influx_write(settings: Settings, devices: list[DeviceInfo], count: int, batch: int, writers: int) -> float:
    from devices.catalog import parse_payload
    from devices.types import Channel
    from ingest.lines import encode

    db = "estate_bench_raw"
    lines = []
    for n, (_, payload) in enumerate(smoke_messages(devices, 1_764_590_400_000)):
        if n == count:
            break
        device = devices[n % len(devices)]
        parsed = parse_payload(device.type, Channel.TELEMETRY, payload)
        assert isinstance(parsed, list)
        lines.append(encode(device, Channel.TELEMETRY, parsed[0]))
    bodies = ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]
    async with Influx(settings.influx_url, db, timeout_s=60) as influx:
        await influx.query(f'DROP DATABASE "{db}"', write=True)
        await influx.create_database()
        queue = list(bodies)
        started = time.perf_counter()

        async def writer() -> None:
            while queue:
                await influx.write(queue.pop(), precision="ns")

        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - started
        await influx.query(f'DROP DATABASE "{db}"', write=True)
    return count / elapsed


class IngestWorker:
    """An ingest process whose session and share group belong to this run alone: an offline member
    of a shared group keeps taking its share of the stream until its session expires."""

    def __init__(self, stack: LocalStack, database: str, name: str, group: str | None = None, index: int = 0) -> None:
        self.port = free_port()
        run = f"{name}-{os.getpid()}-{int(time.time())}"
        self.env = {
            **os.environ,
            **stack.service_env("ingest"),
            "ESTATEWATCH_INFLUX_DATABASE": database,
            "ESTATEWATCH_INGEST_CLIENT_ID": f"{run}-{index}",
            "ESTATEWATCH_INGEST_METRICS_PORT": str(self.port),
            "ESTATEWATCH_INGEST_SHARE_GROUP": group or run,
            "ESTATEWATCH_INGEST_SESSION_EXPIRY_S": "120",
            "ESTATEWATCH_INGEST_COMPLETENESS_S": "0",
            "ESTATEWATCH_LOG_FORMAT": "text",
            "ESTATEWATCH_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "estatewatch", "ingest"], env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("bench ingest worker did not become healthy")

    def written(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("ingest_points_written_total "):
                return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


async def fresh_database(settings: Settings, db: str) -> None:
    async with Influx(settings.influx_url, db) as influx:
        await influx.query(f'DROP DATABASE "{db}"', write=True)
        await influx.create_database()


def worker_pool(stack: LocalStack, db: str, name: str, workers: int) -> list[IngestWorker]:
    """Workers sharing one group of their own."""
    group = f"{name}-{os.getpid()}-{time.time():.0f}"
    return [IngestWorker(stack, db, name, group=group, index=i) for i in range(workers)]


async def ingest_sustained(
    stack: LocalStack, devices: list[DeviceInfo], count: int, workers: int, results: Results, say: Say
) -> None:
    db = "estate_bench_ingest"
    await fresh_database(stack.settings, db)
    pool = worker_pool(stack, db, "bench-ingest", workers)
    for w in pool:
        w.start()  # creates the persistent session and its shared subscription
        w.stop()
    target = parse_mqtt_url(stack.mqtt_url("simulator"))
    start_ms = int(time.time() * 1000) - count
    await publish(target, smoke_messages(devices, start_ms), count, client_prefix="bench-ingest-pub")
    say(f"  {count:,} device messages queued for ingest's session(s); starting {workers} worker(s)")
    for w in pool:
        w.start()
    pids = [w.proc.pid for w in pool if w.proc is not None]
    before = [sample(pid) for pid in pids]
    started = time.perf_counter()
    stored = 0
    async with Influx(stack.settings.influx_url, db) as influx:

        async def stored_now() -> int:
            rows = (await influx.query("SELECT count(seq) FROM smoke_sensor"))[0]
            return int(rows[0].values[0][1]) if rows else 0

        # The metric counts every point (the retained device statuses too); InfluxDB has the last word.
        while time.perf_counter() - started < 600:
            if sum(w.written() for w in pool) >= count * 0.98:
                stored = await stored_now()
                if stored >= count:
                    break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        after = [sample(pid) for pid in pids]
        await asyncio.sleep(2)
        stored = await stored_now()
    for w in pool:
        w.stop()
    results.workers = workers
    results.ingest_msg_s = count / elapsed
    results.ingest_points_s = count / elapsed
    results.ingest_cpu_pct = 100 * sum(a.cpu_s - b.cpu_s for a, b in zip(after, before, strict=True)) / elapsed
    results.ingest_peak_rss_mb = max(a.peak_rss_mb for a in after)
    results.lost = count - stored


async def latency(
    stack: LocalStack, devices: list[DeviceInfo], rate: float, seconds: float, workers: int, results: Results, say: Say
) -> None:
    db = "estate_bench_latency"
    await fresh_database(stack.settings, db)
    pool = worker_pool(stack, db, "bench-latency", workers)
    for w in pool:
        w.start()
    probe, load = devices[0], devices[1:]
    target = parse_mqtt_url(stack.mqtt_url("simulator"))
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    try:
        async with Influx(stack.settings.influx_url, db) as influx:

            async def probe_loop() -> None:
                seq = 0
                probe_messages = smoke_messages([probe], int(time.time() * 1000))
                async with Publisher(target, 1, "bench-probe") as pub:
                    while True:
                        seq += 1
                        topic, payload = next(probe_messages)
                        sent[seq] = time.perf_counter()
                        await pub.send(topic, payload)
                        await asyncio.sleep(0.1)

            async def poll_loop() -> None:
                while True:
                    series = (await influx.query(f"SELECT last(seq) FROM smoke_sensor WHERE device_id = '{probe.id}'"))[
                        0
                    ]
                    if series:
                        last = int(series[0].values[0][1])
                        now = time.perf_counter()
                        for s in range(1, last + 1):
                            if s in sent:
                                seen.setdefault(s, now)
                    await asyncio.sleep(0.005)

            tasks = [asyncio.create_task(probe_loop()), asyncio.create_task(poll_loop())]
            count = int(rate * seconds)
            result = await publish(
                target,
                smoke_messages(load, int(time.time() * 1000)),
                count,
                rate=rate,
                client_prefix="bench-latency-pub",
            )
            await asyncio.sleep(1)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for w in pool:
            w.stop()
    delays = sorted((seen[s] - sent[s]) * 1000 for s in sent if s in seen)
    results.latency_rate_msg_s = result.rate
    results.latency_probes = len(delays)
    if delays:
        results.latency_p50_ms = statistics.median(delays)
        results.latency_p99_ms = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    say(f"  paced stream {result.rate:,.0f} msg/s for {result.seconds:.1f} s, {len(delays)} probes")


async def run(
    settings: Settings, count: int, latency_s: float, workers: int, say: Say, poison_share: float = 0.0
) -> Results:
    stack = LocalStack(settings)
    async with Registry(settings.db_url) as reg:
        from devices.types import DeviceType

        devices = await reg.devices(device_type=DeviceType.SMOKE_SENSOR)
    if not devices:
        raise RuntimeError("no smoke sensors in the registry: run 'estatewatch registry init' first")
    results = Results(messages=count)
    say(f"1/4 broker raw drain ({count:,} messages, QoS 1, mosquitto_sub)")
    results.broker_drain_msg_s = await broker_drain(stack, count, say)
    say(f"    {results.broker_drain_msg_s:,.0f} msg/s")
    say(f"2/4 InfluxDB raw write ({count:,} points in batches of 5,000, 2 writers)")
    results.influx_write_points_s = await influx_write(settings, devices, count, 5000, 2)
    say(f"    {results.influx_write_points_s:,.0f} points/s")
    say(f"3/4 ingest sustained, QoS 1, ack after store ({count:,} messages, {workers} worker(s))")
    await ingest_sustained(stack, devices, count, workers, results, say)
    say(
        f"    {results.ingest_msg_s:,.0f} msg/s, CPU {results.ingest_cpu_pct:.0f} %, peak RSS "
        f"{results.ingest_peak_rss_mb:.0f} MB, lost {results.lost}"
    )
    say(f"4/4 publish-to-queryable latency at 70 % of that rate for {latency_s:.0f} s")
    await latency(stack, devices, 0.7 * results.ingest_msg_s, latency_s, workers, results, say)
    say(f"    p50 {results.latency_p50_ms:.0f} ms, p99 {results.latency_p99_ms:.0f} ms")
    if poison_share:
        from bench.flood_bench import poisoned_drain

        say(f"5/5 the same drain with {poison_share:.0%} bad messages from one device (one worker)")
        results.poison_share = poison_share
        results.poisoned_valid_msg_s, results.poisoned_lost = await poisoned_drain(
            stack, devices, count, poison_share, say
        )
        say(f"    {results.poisoned_valid_msg_s:,.0f} valid msg/s, lost {results.poisoned_lost}")
    return results


def report(results: Results) -> str:
    lines = [
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| broker raw drain (mosquitto_sub, QoS 1) | {results.broker_drain_msg_s:,.0f} msg/s |",
        f"| InfluxDB raw write (5,000-line batches, 2 writers) | {results.influx_write_points_s:,.0f} points/s |",
        f"| ingest sustained, QoS 1, ack after store | {results.ingest_msg_s:,.0f} msg/s "
        f"({results.ingest_points_s:,.0f} points/s) |",
        f"| ingest CPU / peak RSS | {results.ingest_cpu_pct:.0f} % of a core / {results.ingest_peak_rss_mb:.0f} MB |",
        f"| lost | {results.lost} of {results.messages:,} |",
        f"| latency at {results.latency_rate_msg_s:,.0f} msg/s: p50 / p99 | {results.latency_p50_ms:.0f} ms / "
        f"{results.latency_p99_ms:.0f} ms ({results.latency_probes} probes) |",
    ]
    if results.poison_share:
        lines.append(
            f"| ingest with {results.poison_share:.0%} bad messages | {results.poisoned_valid_msg_s:,.0f} valid msg/s, "
            f"lost {results.poisoned_lost} |"
        )
    lines += [f"| {k} | {v:.2f} |" for k, v in results.ratios().items()]
    return "\n".join(lines)


def as_json(results: Results) -> str:
    doc: dict[str, Any] = asdict(results)
    doc["ratios"] = results.ratios()
    return json.dumps(doc, indent=1)


def save(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(as_json(results))
