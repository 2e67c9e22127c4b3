"""``estatewatch bench ingest``: ingest's backlog drain, CPU, RSS and latency against the raw limits
of the broker and InfluxDB, and optionally against Node-RED, all measured in one run on the local stack.

1. broker drain: messages queued for an offline mosquitto_sub session, then drained by it (QoS 1)
2. InfluxDB raw write: pre-built line-protocol batches of ingest's shape, as many writers as ingest
3. ingest drain: the same number of smoke readings (``--devices`` devices) queued for ingest's
   offline session, then drained by fresh workers (bench/drain.py says how it is measured)
4. with ``--peer node-red``: Node-RED drains the same backlog (bench/nodered.py)
5. ingest drain of every device type's telemetry over the whole estate (6,160 devices)
6. ingest drain of messages carrying arrays of readings
7. latency: a paced stream at 70 % of step 3's rate, with a probe device; publish-to-queryable p50/p99
"""

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.consumers import IngestPool, NodeRedPeer, forget_sessions, fresh_database, mosq_cmd, worker_pool
from bench.drain import Consumer, Drain, Message, estate, measure, smoke
from bench.publisher import Publisher, publish, smoke_messages
from devices.topics import ROOT
from devices.types import Channel
from runtime.settings import Settings, parse_mqtt_url
from stack.local import LocalStack
from store.influx import Influx
from store.registry.db import DeviceInfo, Registry

Say = Callable[[str], None]
# The latency probe's poll of InfluxDB: often enough for a 300 ms budget, rare enough not to load the
# InfluxDB it measures (every 5 ms was 200 queries a second on the same two cores).
POLL_S = 0.02


@dataclass
class Results:
    messages: int
    workers: int = 1
    broker_drain_msg_s: float = 0.0
    influx_write_points_s: float = 0.0
    drains: list[Drain] = field(default_factory=list)
    latency_rate_msg_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_probes: int = 0
    poison_share: float = 0.0
    poisoned_valid_msg_s: float = 0.0
    poisoned_lost: int = 0

    def drain(self, name: str) -> Drain | None:
        return next((d for d in self.drains if d.name == name), None)

    def ratios(self) -> dict[str, float]:
        out: dict[str, float] = {}
        ingest, peer = self.drain("ingest"), self.drain("node-red")
        if ingest is None or not ingest.seconds:
            return out
        if peer is not None and peer.msg_s:
            out["ingest / Node-RED (drain rate)"] = ingest.msg_s / peer.msg_s
            out["ingest / Node-RED (CPU per message)"] = ingest.cpu_us_per_msg / peer.cpu_us_per_msg
        if self.poison_share:
            out[f"valid msg/s with {self.poison_share:.0%} bad / clean"] = self.poisoned_valid_msg_s / ingest.msg_s
        if self.broker_drain_msg_s:
            out["ingest / broker drain"] = ingest.msg_s / self.broker_drain_msg_s
        if self.influx_write_points_s:
            out["ingest / InfluxDB write"] = ingest.points_s / self.influx_write_points_s
        return out


async def broker_drain(stack: LocalStack, count: int, say: Say) -> float:
    topic = f"{ROOT}/_bench/drain"  # outside every device subscription: the broker alone is measured
    session = ["mosquitto_sub", "-V", "mqttv5", "-c", "-x", "600", "-i", "bench-drain", "-q", "1", "-t", topic]
    # Create the session, then leave it offline while the queue fills.
    await asyncio.to_thread(
        subprocess.run, mosq_cmd([*session, "-C", "1", "-W", "1"], stack), capture_output=True, check=False
    )
    payload = b'{"ts":1764590400000,"seq":1,"state":"normal","smoke_obscuration_pct":0.2,"temp_c":21.5}'
    target = parse_mqtt_url(stack.mqtt_url("ingest"))
    await publish(target, iter((topic, payload) for _ in range(count)), count, client_prefix="bench-drain-pub")
    say(f"  {count:,} messages queued for mosquitto_sub; draining")
    started = time.perf_counter()
    await asyncio.to_thread(
        subprocess.run,
        mosq_cmd([*session, "-C", str(count)], stack),
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return count / (time.perf_counter() - started)


async def influx_write(settings: Settings, devices: list[DeviceInfo], count: int, batch: int, writers: int) -> float:
    from devices.catalog import parse_payload
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


async def backlog_drain(
    stack: LocalStack, drain: Drain, consumer: Callable[[str], Consumer], messages: Iterator[Message], say: Say
) -> Drain:
    db = f"estate_bench_{drain.name.replace('-', '_')}"
    await fresh_database(stack.settings, db)
    target = parse_mqtt_url(stack.mqtt_url("simulator"))
    async with Influx(stack.settings.influx_url, db) as influx:
        await measure(drain, consumer(db), messages, target, influx)
    say(
        f"    {drain.msg_s:,.0f} msg/s ({drain.points_s:,.0f} points/s), {drain.cpu_us_per_msg:.1f} us CPU a message "
        f"({drain.cpu_pct:.0f} % of a core), peak RSS {drain.peak_rss_mb:.0f} MB, lost {drain.lost}"
    )
    return drain


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
                    await asyncio.sleep(POLL_S)

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
        forget_sessions(stack, [w.env["ESTATEWATCH_INGEST_CLIENT_ID"] for w in pool])
    delays = sorted((seen[s] - sent[s]) * 1000 for s in sent if s in seen)
    results.latency_rate_msg_s = result.rate
    results.latency_probes = len(delays)
    if delays:
        results.latency_p50_ms = statistics.median(delays)
        results.latency_p99_ms = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    say(f"  paced stream {result.rate:,.0f} msg/s for {result.seconds:.1f} s, {len(delays)} probes")


async def run(
    settings: Settings, count: int, latency_s: float, workers: int, say: Say, poison_share: float = 0.0,
    peer: str | None = None, devices_n: int = 1000, per_message: int = 100,
) -> Results:  # fmt: skip
    from devices.estate import load_estate
    from devices.types import DeviceType

    stack = LocalStack(settings)
    async with Registry(settings.db_url) as reg:
        every_smoke = await reg.devices(device_type=DeviceType.SMOKE_SENSOR)
    if not every_smoke:
        raise RuntimeError("no smoke sensors in the registry: run 'estatewatch registry init' first")
    devices = every_smoke[:devices_n]
    results = Results(messages=count, workers=workers)
    steps = 6 + bool(peer) + bool(poison_share)
    step = iter(range(1, steps + 1))
    start_ms = int(time.time() * 1000) - count

    def pool(name: str) -> Callable[[str], Consumer]:
        return lambda db: IngestPool(stack, db, f"bench-{name}", workers)

    say(f"{next(step)}/{steps} broker raw drain ({count:,} messages, QoS 1, mosquitto_sub)")
    results.broker_drain_msg_s = await broker_drain(stack, count, say)
    say(f"    {results.broker_drain_msg_s:,.0f} msg/s")
    say(f"{next(step)}/{steps} InfluxDB raw write ({count:,} points in batches of 5,000, 2 writers)")
    results.influx_write_points_s = await influx_write(settings, devices, count, 5000, 2)
    say(f"    {results.influx_write_points_s:,.0f} points/s")

    say(f"{next(step)}/{steps} ingest: backlog of {count:,} smoke readings of {len(devices):,} devices, "
        f"{workers} worker(s), QoS 1, ack after store")  # fmt: skip
    drain = Drain("ingest", len(devices), count, count, acknowledges="after the store")
    results.drains.append(await backlog_drain(stack, drain, pool("ingest"), smoke(devices, start_ms), say))
    if peer == "node-red":
        say(f"{next(step)}/{steps} Node-RED 4: the same backlog, mqtt in -> function -> join 1000/0.2 s -> "
            "influxdb batch")  # fmt: skip
        drain = Drain("node-red", len(devices), count, count, acknowledges="on receipt")

        def node_red(db: str) -> Consumer:
            return NodeRedPeer(stack, db, devices, say)

        results.drains.append(await backlog_drain(stack, drain, node_red, smoke(devices, start_ms), say))

    whole = load_estate(settings.estate_file)
    messages, n_devices = estate(whole, start_ms)
    say(f"{next(step)}/{steps} ingest: backlog of {count:,} readings of all {n_devices:,} devices (every type's "
        "telemetry)")  # fmt: skip
    drain = Drain("ingest-estate", n_devices, count, count, acknowledges="after the store")
    results.drains.append(await backlog_drain(stack, drain, pool("estate"), messages(), say))

    batches = max(1, count // per_message)
    say(f"{next(step)}/{steps} ingest: {batches:,} messages of {per_message} readings each ({batches * per_message:,} "
        f"readings) of {len(devices):,} devices")  # fmt: skip
    drain = Drain("ingest-batched", len(devices), batches, batches * per_message, acknowledges="after the store")
    results.drains.append(
        await backlog_drain(stack, drain, pool("batched"), smoke(devices, start_ms, per_message), say)
    )

    ingest = results.drains[0]
    say(f"{next(step)}/{steps} publish-to-queryable latency at 70 % of the drain rate for {latency_s:.0f} s")
    await latency(stack, devices, 0.7 * ingest.msg_s, latency_s, workers, results, say)
    say(f"    p50 {results.latency_p50_ms:.0f} ms, p99 {results.latency_p99_ms:.0f} ms")
    if poison_share:
        from bench.flood_bench import poisoned_drain

        say(f"{next(step)}/{steps} the same drain with {poison_share:.0%} bad messages from one device (one worker)")
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
    ]
    lines += [
        f"| {d.name} drain ({d.devices:,} devices, acks {d.acknowledges}) | {d.msg_s:,.0f} msg/s, "
        f"{d.points_s:,.0f} points/s; {d.cpu_us_per_msg:.1f} us CPU/msg ({d.cpu_pct:.0f} % of a core); "
        f"peak RSS {d.peak_rss_mb:.0f} MB; lost {d.lost} of {d.points:,} |"
        for d in results.drains
    ]
    lines.append(
        f"| latency at {results.latency_rate_msg_s:,.0f} msg/s: p50 / p99 | {results.latency_p50_ms:.0f} ms / "
        f"{results.latency_p99_ms:.0f} ms ({results.latency_probes} probes) |"
    )
    if results.poison_share:
        lines.append(
            f"| ingest with {results.poison_share:.0%} bad messages | {results.poisoned_valid_msg_s:,.0f} valid msg/s, "
            f"lost {results.poisoned_lost} |"
        )
    lines += [f"| {k} | {v:.2f} |" for k, v in results.ratios().items()]
    return "\n".join(lines)


def as_json(results: Results) -> str:
    doc: dict[str, Any] = asdict(results)
    for d, out in zip(results.drains, doc["drains"], strict=True):
        out |= {"msg_s": d.msg_s, "points_s": d.points_s, "cpu_us_per_msg": d.cpu_us_per_msg, "lost": d.lost}
    doc["ratios"] = results.ratios()
    return json.dumps(doc, indent=1)


def save(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(as_json(results))
