"""``estatewatch bench api``: the API's latency at a steady request rate on the full reference
estate (6,160 devices in the registry and InfluxDB, a year's worth of alerts in the book), against
baselines measured in the same run: /healthz through the same server (the HTTP floor) and the
same InfluxQL sent straight to InfluxDB (the database floor).

Open loop: requests start on a fixed schedule whether or not earlier ones have answered, so a slow
answer shows up as latency instead of quietly lowering the rate.
"""

import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.rules_bench import estate_stream
from devices.alerts import Alert
from devices.catalog import PayloadError, parse_payload
from devices.estate import Estate
from devices.reference import reference_estate
from devices.topics import TopicError, parse_topic
from devices.types import DeviceType
from ingest.lines import encode
from runtime.settings import Settings
from stack.local import LocalStack
from stack.procs import free_port, free_port_pair
from store.alerts import AlertStore
from store.influx import Influx
from store.registry.db import Registry
from store.tokens import Role, TokenStore

Say = Callable[[str], None]


@dataclass
class Timing:
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass
class Results:
    rate_rps: float = 0.0
    seconds: float = 0.0
    devices: int = 0
    readings: int = 0
    alerts: int = 0
    timings: dict[str, Timing] = field(default_factory=dict)


def _timing(samples: list[float], errors: int) -> Timing:
    s = sorted(samples)
    if not s:
        return Timing(errors=errors)
    return Timing(len(s), errors, statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))], s[-1])


async def _load_influx(influx: Influx, registry: Registry, estate: Estate, hours: float, say: Say) -> int:
    index = await registry.device_index()
    site = estate.site.id
    now = int(time.time() * 1000)
    lines: list[str] = []
    written = 0
    for chunk in estate_stream(estate, now - int(hours * 3_600_000), hours, seed=5):
        for _, topic, raw in chunk:
            try:
                t = parse_topic(topic)
                parsed = parse_payload(t.device_type, t.channel, raw)
            except (TopicError, PayloadError):
                continue
            device = index[(site, t.device_type, t.device_id)]
            items = parsed if isinstance(parsed, list) else [parsed]
            lines += [encode(device, t.channel, item) for item in items]
        if len(lines) >= 20_000:
            await influx.write("\n".join(lines).encode(), precision="ns")
            written += len(lines)
            lines = []
    if lines:
        await influx.write("\n".join(lines).encode(), precision="ns")
        written += len(lines)
    say(f"  {written:,} readings of the last {hours:.0f} h written to InfluxDB")
    return written


async def _load_alerts(registry: Registry, estate: Estate, count: int) -> int:
    store = AlertStore(registry)
    rng = random.Random(9)
    smoke = [d for d in estate.devices if d.type is DeviceType.SMOKE_SENSOR]
    grid_of = {b.id: b.grid for b in estate.buildings}
    now = int(time.time() * 1000)
    for i in range(count):
        d = rng.choice(smoke)
        ts = now - rng.randrange(365 * 86_400_000)
        snap = {"rule": rng.choice(["fire", "smoke_maintenance", "device_silent"]), "subject": f"{d.id}-{i}",
                "site": estate.site.id, "severity": rng.choice(["info", "warning", "critical"]), "title": f"bench {i}",
                "first_ts": ts, "last_ts": ts, "state": "open", "count": 1, "escalation": 0,
                "grid": grid_of.get(d.building or ""), "building": d.building, "unit": d.unit, "zone": None,
                "recipients": [], "evidence": [{"ts": ts, "stage": "bench"}], "resolved_ts": None}  # fmt: skip
        applied = await store.apply("opened", ts, Alert.from_json(snap))
        if applied is not None and rng.random() < 0.97:  # most of a year's alerts are long resolved
            await store.resolve(applied.alert.id, "bench")
    return count


async def _open_loop(
    rate: float, seconds: float, make: Callable[[int], Coroutine[Any, Any, bool]]
) -> tuple[list[float], int]:
    """Start request i at i / rate; each returns whether it succeeded. Latencies in ms."""
    samples: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        ok = await make(i)
        if ok:
            samples.append((time.perf_counter() - started) * 1000)
        else:
            errors += 1

    t0 = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return samples, errors


async def _measure(settings: Settings, stack: LocalStack, tmp: Path, rate: float, seconds: float, say: Say,
                   results: Results) -> None:  # fmt: skip
    estate = reference_estate()
    registry_url = f"sqlite+aiosqlite:///{tmp}/registry.db"
    influx_db = Influx(settings.influx_url, settings.influx_database)
    async with Registry(registry_url, pooled=True) as registry, influx_db as influx:
        await influx.create_database()
        await registry.load_estate(estate)
        results.devices = len(estate.devices)
        results.readings = await _load_influx(influx, registry, estate, 2.0, say)
        results.alerts = await _load_alerts(registry, estate, 3000)
        say(f"  {results.alerts:,} alerts in the book (3% still open)")
        tokens = TokenStore(registry)
        engineer, _ = await tokens.create(Role.ENGINEER, "bench")
        grids = sorted({b.grid for b in estate.buildings})
        workers = [(await tokens.create(Role.GRID_WORKER, f"bench-{g}", grids=[g]))[0] for g in grids]
    port = free_port()
    env = {**os.environ, **stack.service_env("api"), "ESTATEWATCH_DB_URL": registry_url,
           "ESTATEWATCH_API_PORT": str(port), "ESTATEWATCH_LOG_LEVEL": "WARNING"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "estatewatch", "api", env=env, stdout=subprocess.DEVNULL,
        stderr=(tmp / "api.log").open("wb"),
    )  # fmt: skip
    buildings = [b.id for b in estate.buildings]
    site = estate.site.id
    latest_q = "/api/v1/telemetry/latest"
    try:
        # aiohttp, not httpx, for the load: httpx spent more CPU per request than the API served
        # (measured: the generator pegged a core and the open loop fell behind its schedule).
        base = f"http://127.0.0.1:{port}"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(base, timeout=timeout, connector=aiohttp.TCPConnector(limit=200)) as http:
            for _ in range(200):
                try:
                    async with http.get("/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                tail = (tmp / "api.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the API did not become ready:\n{tail}")

            async def get(path: str, token: str | None, params: Any = None) -> bool:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                try:
                    async with http.get(path, params=params, headers=headers) as r:
                        await r.read()
                        return r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            def alerts(i: int) -> Coroutine[Any, Any, bool]:
                if i % 2:
                    open_ones = [("state", "open"), ("state", "acknowledged")]
                    return get("/api/v1/alerts", workers[i % len(workers)], open_ones)
                return get("/api/v1/alerts", engineer, {"limit": 50})

            def latest(i: int) -> Coroutine[Any, Any, bool]:
                params = {"site": site, "type": "smoke_sensor", "building": buildings[i % len(buildings)]}
                return get(latest_q, engineer, params)

            def mixed(i: int) -> Coroutine[Any, Any, bool]:
                return alerts(i // 2) if i % 2 else latest(i // 2)

            async def churn() -> None:
                """An alert resolved every second through the API (as people do): each change drops the
                API's cached alert lists, so the measurement includes recomputing them."""
                async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {engineer}"}) as side:
                    async with side.get("/api/v1/alerts", params={"state": "open", "limit": 500}) as r:
                        open_ids = [a["id"] for a in (await r.json())["items"]]
                    for alert_id in open_ids:
                        async with side.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "bench"}):
                            pass
                        await asyncio.sleep(1.0)

            # The load generator's own collector pauses would read as API latency.
            gc.collect()
            gc.disable()
            say(f"  warm-up, then {rate:.0f} requests/s for {seconds:.0f} s per measurement")
            churning = asyncio.create_task(churn())
            await _open_loop(rate, 3, mixed)
            measurements: list[tuple[str, Callable[[int], Coroutine[Any, Any, bool]]]] = [
                ("healthz (HTTP floor)", lambda i: get("/healthz", None)),
                ("alert list (an alert resolved every second)", alerts),
                ("latest readings (a building's smoke sensors)", latest),
                ("mixed: alerts + latest", mixed),
            ]
            for name, make in measurements:
                samples, errors = await _open_loop(rate, seconds, make)
                results.timings[name] = _timing(samples, errors)
                t = results.timings[name]
                say(f"  {name}: p50 {t.p50_ms:.1f} ms, p99 {t.p99_ms:.1f} ms, max {t.max_ms:.1f} ms, {errors} errors")
            churning.cancel()
        async with Influx(settings.influx_url, settings.influx_database) as influx:
            ids = [d.id for d in estate.devices if d.type is DeviceType.SMOKE_SENSOR and d.building == buildings[0]]
            where = " OR ".join(f"\"device_id\" = '{d}'" for d in ids)
            q = (f"SELECT * FROM \"smoke_sensor\" WHERE \"site\" = '{site}' AND ({where}) AND time > now() - 1d "
                 'GROUP BY "device_id" ORDER BY time DESC LIMIT 1')  # fmt: skip

            # One at a time: InfluxDB cannot take this query at the API's rate (tried: connections
            # time out), so the floor is a single query's latency, not a rate.
            samples = []
            for _ in range(100):
                started = time.perf_counter()
                await influx.query(q)
                samples.append((time.perf_counter() - started) * 1000)
            results.timings["InfluxDB alone: the same latest query, one at a time"] = _timing(samples, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died already: that is the error
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def run(settings: Settings, rate: float, seconds: float, say: Say) -> Results:
    results = Results(rate_rps=rate, seconds=seconds)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        private = settings.model_copy(update={
            "run_dir": Path(tmp) / "run", "mqtt_url": f"mqtt://127.0.0.1:{free_port()}",
            "influx_url": f"http://127.0.0.1:{free_port_pair()}", "influx_database": "bench_api"})  # fmt: skip
        stack = LocalStack(private)
        for line in await asyncio.to_thread(lambda: list(stack.up())):
            say(f"  {line}")
        try:
            await _measure(private, stack, Path(tmp), rate, seconds, say, results)
        finally:
            for line in await asyncio.to_thread(lambda: list(stack.down())):
                say(f"  {line}")
    return results


def report(r: Results) -> str:
    head = (f"\n{r.devices:,} devices, {r.readings:,} readings, {r.alerts:,} alerts; open loop at {r.rate_rps:.0f} "
            f"requests/s, {r.seconds:.0f} s each\n")  # fmt: skip
    rows = [f"| {name} | {t.requests:,} | {t.p50_ms:.1f} | {t.p99_ms:.1f} | {t.max_ms:.1f} | {t.errors} |"
            for name, t in r.timings.items()]  # fmt: skip
    table = ["| measure | requests | p50 ms | p99 ms | max ms | errors |", "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join([head, *table, *rows])


def save(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(results), indent=1))
