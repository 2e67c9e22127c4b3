"""``estatewatch bench boards``: every panel of the nine boards timed over a generated history of the
full reference estate, at the spans a property engineer picks.

1. history: the reference estate's traffic for ``--hours`` up to now (sim/play.py: the simulator's
   own schedule, in event time, no broker), encoded as ingest encodes it, plus the points the
   platform writes about itself at their periods (ingest_stats, ingest_completeness per device,
   alerts_open, devices_now, a day's alert changes), into a database of its own, as fast as
   InfluxDB takes it. The write rate is the run's first baseline.
2. floor: a query that reads one point of one series (a round trip and little else), the second
   baseline.
3. panels: each query of the dashboards (the built ones, or ``--dashboards DIR`` of JSON files, such
   as an older release's), expanded as Grafana expands it (grafana/macros.py: ``$timeFilter``, the
   interval from the span and the panel's minimum, a current-state panel's own window, variables at
   "All") for spans of 1 h, 24 h and 7 d; the median of three runs, the rows returned and the longest
   series. A query past ``--timeout`` is killed on the server and reported as such.
"""

import asyncio
import json
import multiprocessing
import random
import statistics
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devices.catalog import PayloadError, parse_payload
from devices.estate import Device, Estate
from devices.reference import reference_estate
from devices.topics import ESTATE_GRID, parse_topic
from devices.types import Channel, DeviceType
from grafana.build import rendered
from grafana.macros import ALL, PanelQuery, expand_for_grafana, panel_queries, variables
from ingest.completeness import by_type_lines, completeness_line
from ingest.lines import encode
from ingest.rejects import COUNTS_MEASUREMENT, REJECTS_RP
from ingest.settings import IngestSettings
from rules.context import Where
from rules.engine import LOAD_DELAY_MS
from rules.loads import BuildingMinutes
from sim.play import play
from store.alert_copies import open_grid_lines, open_lines
from store.influx import Influx
from store.now_series import devices_now_lines
from store.registry.db import DeviceInfo
from store.retention import ensure_policy
from store.series import COMPLETENESS_PERIOD_S, STATS_PERIOD_S, line

Say = Callable[[str], None]
HOUR_MS = 3_600_000
BATCH = 5000
SPANS = {"1 h": HOUR_MS, "24 h": 24 * HOUR_MS, "7 d": 7 * 24 * HOUR_MS}
RUNS = 3


@dataclass
class PanelTiming:
    board: str
    panel: str
    ref: str
    windowed: bool
    seconds: dict[str, float] = field(default_factory=dict)  # by span; inf: killed at the timeout
    rows: dict[str, int] = field(default_factory=dict)
    longest: dict[str, int] = field(default_factory=dict)  # rows of the longest series

    @property
    def label(self) -> str:
        return f"{self.board} / {self.panel} / {self.ref}"


@dataclass
class Results:
    hours: float = 0.0
    devices: int = 0
    lines: int = 0
    write_s: float = 0.0
    floor_ms: float = 0.0
    dashboards: str = "built"
    panels: list[PanelTiming] = field(default_factory=list)

    @property
    def write_rate(self) -> float:
        return self.lines / self.write_s if self.write_s else 0.0


def _device_infos(estate: Estate) -> dict[str, DeviceInfo]:
    site = estate.site.id
    return {
        d.id: DeviceInfo(
            site, d.id, d.type, d.building, d.unit, d.floor, d.zone, estate.grid_of(d), d.reporting_interval_s, True
        )
        for d in estate.devices
    }


def share_of(device: Device, shares: int) -> int:
    """By building (or zone), so that a building's charging load is summed in one process."""
    return zlib.crc32((device.building or device.zone or device.id).encode()) % shares


def history_lines(estate: Estate, share: int, shares: int, start_ms: int) -> Iterator[str]:
    """One estate hour from ``start_ms`` of one share of the devices: the readings as ingest stores
    them, each device's completeness points as ingest writes them, and the charging load the rules
    engine derives (its first and last minute of each hour partial: it starts fresh each hour)."""
    infos = _device_infos(estate)
    mine = [d for d in estate.devices if share_of(d, shares) == share]
    minutes = BuildingMinutes(delay_ms=LOAD_DELAY_MS)  # what the rules engine derives (fresh each hour)
    wheres = {d.id: Where(estate.site.id, d, estate.grid_of(d), d.building, d.unit, d.zone) for d in mine}
    for message in play(estate, mine, seed=share * 100_003 + start_ms // HOUR_MS, start_ms=start_ms,
                        duration_ms=HOUR_MS):  # fmt: skip
        topic = parse_topic(message["topic"])
        payload = message["payload"]
        raw = payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode()
        try:
            parsed = parse_payload(topic.device_type, topic.channel, raw)
        except PayloadError:
            continue  # the simulator's deliberate bad payloads: ingest rejects them too
        for item in parsed if isinstance(parsed, list) else [parsed]:
            info = infos[topic.device_id]
            yield encode(info, topic.channel, item)
            derive = {DeviceType.EV_CHARGER: minutes.charger, DeviceType.SMOKE_SENSOR: minutes.smoke}.get(info.type)
            if derive is not None and topic.channel is Channel.TELEMETRY:
                derive(None, wheres[info.id], topic.channel, item)  # type: ignore[arg-type]
                minutes.tick(None, item.ts)  # type: ignore[arg-type]
    yield from minutes.take()
    # Ingest's completeness point: per device and period in which it sent something (a smoke
    # sensor every fifth minute). Stamped in ns like the rest of the batch.
    period_ms = COMPLETENESS_PERIOD_S * 1000
    for k, end in enumerate(range(start_ms + period_ms, start_ms + HOUR_MS + 1, period_ms)):
        for i, d in enumerate(mine):
            every = max(1, d.reporting_interval_s // COMPLETENESS_PERIOD_S)
            if (k + i) % every == 0:
                n = max(1, COMPLETENESS_PERIOD_S // d.reporting_interval_s)
                yield completeness_line((estate.site.id, d.type.value, d.id), n, n, 1, n, end * 1_000_000)


def _write_hour(influx_url: str, db: str, share: int, shares: int, start_ms: int) -> tuple[int, float]:
    """In a child process: one share of one hour generated and written; (lines, seconds writing)."""
    estate = reference_estate()

    async def write() -> tuple[int, float]:
        count, writing = 0, 0.0
        async with Influx(influx_url, db, timeout_s=120) as influx:
            batch: list[str] = []

            async def flush() -> None:
                nonlocal writing
                started = time.perf_counter()
                await influx.write("\n".join(batch).encode(), precision="ns")
                writing += time.perf_counter() - started
                batch.clear()

            for text in history_lines(estate, share, shares, start_ms):
                batch.append(text)
                count += 1
                if len(batch) >= BATCH:
                    await flush()
            if batch:
                await flush()
        return count, writing

    return asyncio.run(write())


def platform_lines(estate: Estate, start_ms: int, end_ms: int) -> Iterator[str]:
    """What the platform writes about itself, at its periods: one ingest worker's stats, the rules
    service's now series, and a day's worth of alert changes."""
    rng = random.Random(7)
    site = estate.site.id
    grids = [g.id for g in estate.grids] + [ESTATE_GRID]
    rules = ["fire", "sos", "device_silent", "flying_lead", "fire_lane", "zombie_car", "door_held_open"]
    for ts in range(start_ms, end_ms, STATS_PERIOD_S * 1000):
        yield line("ingest_stats", {"worker": "ingest-1"}, {
            "messages": 940, "rate": 94.0, "points_written": 940, "points_refused": 0, "points_spooled": 0,
            "write_mean_s": 0.004, "ack_mean_s": 0.02, "spool_bytes": 0, "inflight": 12, "connected": 1,
        }, ts * 1_000_000)  # fmt: skip
    counts: dict[tuple[str, str | None], tuple[int, int]] = {}
    for d in estate.devices:
        key = (d.type.value, estate.grid_of(d))
        counts[key] = (counts.get(key, (0, 0))[0] + 1, 0)
    readings: dict[tuple[str, str], float] = {}  # ingest's by-type sums: readings a period, on average
    for d in estate.devices:
        key = (site, d.type.value)
        readings[key] = readings.get(key, 0.0) + COMPLETENESS_PERIOD_S / d.reporting_interval_s
    per_minute = {k: (round(n), round(n)) for k, n in readings.items()}
    for ts in range(start_ms, end_ms, COMPLETENESS_PERIOD_S * 1000):
        yield from by_type_lines(per_minute, ts * 1_000_000)
    for ts in range(start_ms, end_ms, 60_000):
        # A tenth of the (rule, grid) pairs with an open warning, as the rules service counts them.
        open_now = {(rule, grid, "warning", "open"): 1 for rule in rules for grid in grids if rng.random() < 0.1}
        yield from open_lines(site, rules, grids, open_now, ts * 1_000_000)
        yield from open_grid_lines(site, grids, open_now, ts * 1_000_000)
        yield from devices_now_lines(site, counts, ts * 1_000_000)
    for i in range(int((end_ms - start_ms) / HOUR_MS * 10)):  # ten alert changes an hour
        ts = rng.randrange(start_ms, end_ms)
        action = rng.choice(["opened", "acknowledged", "resolved"])
        tags = {"site": site, "rule": rng.choice(rules), "severity": "warning", "action": action,
                "grid": rng.choice(grids), "building": "b001"}  # fmt: skip
        change: dict[str, object] = {"alert_id": i + 1, "subject": "b001", "title": "bench", "state": "open",
                                     "count": 1, "escalation": 0, "ack_s": 60.0}  # fmt: skip
        yield line("alerts", tags, change, ts * 1_000_000 + i)


def reject_count_lines(estate: Estate, start_ms: int, end_ms: int) -> Iterator[str]:
    """A few rejects an hour, counted as ingest counts them (written to the rejects policy)."""
    rng = random.Random(11)
    devices = estate.devices
    for ts in range(start_ms, end_ms, 600_000):
        d = rng.choice(devices)
        tags = {"site": estate.site.id, "device_type": d.type.value, "device_id": d.id, "reason": "bad_json",
                "worker": "ingest-1"}  # fmt: skip
        yield line(COUNTS_MEASUREMENT, tags, {"count": rng.randint(1, 5)}, ts * 1_000_000)


async def prepare(influx: Influx, estate: Estate, start_ms: int, end_ms: int) -> None:
    """A fresh database as ingest leaves it (its rejects policy at ingest's default retention), with
    the platform's own points."""
    await influx.query(f'DROP DATABASE "{influx.database}"', write=True)
    await influx.create_database()
    await ensure_policy(influx, REJECTS_RP, IngestSettings.model_fields["ingest_rejects_retention"].default)
    await write_batches(influx, platform_lines(estate, start_ms, end_ms))
    await write_batches(influx, reject_count_lines(estate, start_ms, end_ms), rp=REJECTS_RP)


async def write_batches(influx: Influx, lines: Iterable[str], rp: str = "") -> None:
    """In ingest's batch size: InfluxDB closes the connection on a body past its max-body-size."""
    batch: list[str] = []
    for text in lines:
        batch.append(text)
        if len(batch) >= BATCH:
            await influx.write("\n".join(batch).encode(), precision="ns", rp=rp)
            batch.clear()
    if batch:
        await influx.write("\n".join(batch).encode(), precision="ns", rp=rp)


async def generate(influx_url: str, db: str, hours: int, say: Say, results: Results) -> int:
    """The history, hour by hour in two processes; returns its end (now, when it started)."""
    estate = reference_estate()
    end_ms = int(time.time() * 1000) // 60_000 * 60_000
    start_ms = end_ms - hours * HOUR_MS
    async with Influx(influx_url, db, timeout_s=120) as influx:
        await prepare(influx, estate, start_ms, end_ms)
    shares = 2
    started = time.monotonic()
    with ProcessPoolExecutor(shares, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_write_hour, influx_url, db, s, shares, start_ms + h * HOUR_MS)
                for h in range(hours) for s in range(shares)]  # fmt: skip
        for done, job in enumerate(as_completed(jobs), start=1):
            lines, writing = job.result()
            results.lines += lines
            results.write_s += writing / shares  # the two write side by side
            elapsed = time.monotonic() - started
            say(f"history: {done}/{len(jobs)} hour-shares, {results.lines:,} lines, "
                f"{results.lines / elapsed:,.0f} lines/s generated and written")  # fmt: skip
    results.devices, results.hours = len(estate.devices), hours
    return end_ms


def _sql(board: dict[str, Any], q: PanelQuery, site: str, span_ms: int, now_ms: int) -> str:
    values = {"site": site, "building": ALL, "grid": ALL}
    return expand_for_grafana(q, now_ms - span_ms, now_ms, values, variables(board))


async def _kill_running(http: httpx.AsyncClient, db: str) -> None:
    """InfluxDB 1.x keeps running a query its client gave up on: stop it, so the next one is timed
    alone."""
    answer = (await http.get("/query", params={"q": "SHOW QUERIES"})).json()
    for series in answer["results"][0].get("series", []):
        for row in series["values"]:
            qid, text, database = row[0], row[1], row[2]
            if database == db and not text.startswith("SHOW QUERIES"):
                await http.post("/query", data={"q": f"KILL QUERY {qid}"})


async def time_query(http: httpx.AsyncClient, db: str, sql: str, timeout_s: float) -> tuple[float, int, int]:
    """(seconds, rows, rows of the longest series) of one query; inf seconds when it passed the timeout."""
    started = time.perf_counter()
    try:
        response = await http.get("/query", params={"db": db, "q": sql, "epoch": "ms"}, timeout=timeout_s)
    except httpx.TimeoutException:
        await _kill_running(http, db)
        return float("inf"), 0, 0
    elapsed = time.perf_counter() - started
    result = response.json()["results"][0]
    if "error" in result:
        raise RuntimeError(f"{result['error']}: {sql}")
    lengths = [len(s["values"]) for s in result.get("series", [])]
    return elapsed, sum(lengths), max(lengths, default=0)


async def time_panels(
    influx_url: str, db: str, site: str, now_ms: int, boards: list[dict[str, Any]], timeout_s: float, say: Say,
    results: Results, runs: int = RUNS,
) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=influx_url, timeout=timeout_s) as http:
        one = next(d.id for d in reference_estate().devices if d.type.value == "smoke_sensor")
        since = now_ms - HOUR_MS
        floor = f"SELECT last(\"seq\") FROM \"smoke_sensor\" WHERE \"device_id\" = '{one}' AND time > {since}ms"
        floors = [(await time_query(http, db, floor, timeout_s))[0] for _ in range(5)]
        results.floor_ms = statistics.median(floors) * 1000
        for board in boards:
            for q in panel_queries(board):
                timing = PanelTiming(q.board, q.panel, q.ref, q.now_window is not None)
                for span, span_ms in SPANS.items():
                    timed = []
                    for _ in range(runs):
                        timed.append(await time_query(http, db, _sql(board, q, site, span_ms, now_ms), timeout_s))
                        if timed[-1][0] == float("inf"):
                            break  # once past the timeout is enough
                    timing.seconds[span] = statistics.median(r[0] for r in timed)
                    timing.rows[span], timing.longest[span] = timed[-1][1], timed[-1][2]
                results.panels.append(timing)
                say(f"panels: {len(results.panels)} timed; {timing.label}: "
                    + ", ".join(f"{s} {_secs(t)}" for s, t in timing.seconds.items()))  # fmt: skip


def load_boards(directory: Path | None) -> list[dict[str, Any]]:
    if directory is None:
        return [json.loads(text) for text in rendered().values()]
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no dashboard JSON files in {directory}")
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


async def run(
    influx_url: str, db: str, hours: int, dashboards: Path | None, timeout_s: float, reuse: bool, say: Say
) -> Results:
    results = Results(dashboards=str(dashboards) if dashboards else "built")
    boards = load_boards(dashboards)
    estate = reference_estate()
    if reuse:
        now_ms = await _history_end(influx_url, db)
        say(f"history: reusing {db}, up to {time.strftime('%H:%M', time.localtime(now_ms / 1000))}")
        results.devices, results.hours = len(estate.devices), hours
    else:
        say(f"history: {hours} h of {len(estate.devices):,} devices into {db} at {influx_url}")
        now_ms = await generate(influx_url, db, hours, say, results)
    await time_panels(influx_url, db, estate.site.id, now_ms, boards, timeout_s, say, results)
    return results


async def _history_end(influx_url: str, db: str) -> int:
    async with Influx(influx_url, db) as influx:
        found = await influx.query('SELECT last("rate") FROM "ingest_stats"')
    if not found or not found[0]:
        raise RuntimeError(f"{db} holds no history to reuse: run without --reuse first")
    return int(found[0][0].values[0][0]) + STATS_PERIOD_S * 1000


def _secs(t: float) -> str:
    return "killed" if t == float("inf") else f"{t:.2f} s"


def report(r: Results) -> str:
    out = [
        f"history: {r.hours:g} h of {r.devices:,} devices, {r.lines:,} lines "
        + (f"written at {r.write_rate:,.0f} lines/s (InfluxDB's time in /write)" if r.lines else "(reused)"),
        f"floor (one point of one series): {r.floor_ms:.1f} ms; dashboards: {r.dashboards}",
        "",
        "| panel | " + " | ".join(SPANS) + " | rows at 24 h (longest series) |",
        "| --- | " + " | ".join("---" for _ in SPANS) + " | --- |",
    ]
    for p in sorted(r.panels, key=lambda p: -max(p.seconds.values())):
        out.append(f"| {p.label}{' (own window)' if p.windowed else ''} | "
                   + " | ".join(_secs(p.seconds[s]) for s in SPANS)
                   + f" | {p.rows['24 h']:,} ({p.longest['24 h']:,}) |")  # fmt: skip
    slow = [p for p in r.panels if p.seconds["24 h"] >= 1.0]
    windowed = [p for p in r.panels if p.windowed]
    # A ratio of two few-ms answers is noise: judged on those over 20 ms, the rest by difference.
    timed = [p for p in windowed if p.seconds["1 h"] >= 0.02]
    worst = max((p.seconds["7 d"] / p.seconds["1 h"] for p in timed), default=0.0)
    spread = max((abs(p.seconds["7 d"] - p.seconds["1 h"]) for p in windowed), default=0.0)
    out += [
        "",
        f"{len(slow)} of {len(r.panels)} queries take 1 s or more at 24 h"
        + (": " + "; ".join(p.label for p in slow) if slow else ""),
        f"current-state panels (own window): {len(windowed)}; 7 d / 1 h at most {worst:.1f}x (those over 20 ms), "
        f"{spread * 1000:.0f} ms apart at most",
    ]
    return "\n".join(out)


def save(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = asdict(results) | {"write_rate": results.write_rate}
    for p in doc["panels"]:  # killed at the timeout: null, as JSON has no infinity
        p["seconds"] = {s: (None if t == float("inf") else t) for s, t in p["seconds"].items()}
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
