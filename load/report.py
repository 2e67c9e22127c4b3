"""What a finished load run measured: figures from its files (Locust's CSV, procstat, ledgers,
probe), and the report printed after a run and by ``estatewatch load report``."""

import contextlib
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from load.ledger import Ledger, read_probe
from load.plan import RunPlan
from load.scenarios import SCENARIOS, Scenario
from load.verify import Verdict, latency_of, percentile


@dataclass
class Outcome:
    scenario: str
    folder: Path
    verdict: Verdict
    locust_exit: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def summarize(folder: Path, events: dict[str, float], scenario: Scenario) -> dict[str, Any]:
    """The figures docs/load.md reports: throughput, failures, resources, reconnects, steps."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        with (folder / "locust_stats.csv").open() as f:
            rows = list(csv.DictReader(f))
        mqtt = [r for r in rows if r["Type"] == "MQTT"]
        out["messages_acked"] = sum(int(r["Request Count"]) for r in mqtt)
        out["mqtt_failures"] = sum(int(r["Failure Count"]) for r in mqtt)
        api = [r for r in rows if r["Type"] in ("GET", "POST")]
        out["api"] = {r["Name"]: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                                  "p50_ms": _num(r["50%"]), "p99_ms": _num(r["99%"])} for r in api}  # fmt: skip
        out["puback"] = {r["Name"]: {"p50_ms": _num(r["50%"]), "p99_ms": _num(r["99%"])} for r in mqtt}
    with contextlib.suppress(OSError):
        out["messages_per_s"] = _steady_rate(folder / "locust_stats_history.csv")
        out["peak_users"] = _peak_users(folder / "locust_stats_history.csv")
    with contextlib.suppress(OSError):
        out["resources"] = _resources(folder / "procstat.csv")
    with contextlib.suppress(OSError, FileNotFoundError):
        ledger = Ledger.read(folder)
        out["connected_devices"] = sum(1 for r in ledger.devices.values() if r.connects)
        out["connected_at_end"] = sum(1 for r in ledger.devices.values() if r.connected_at_end)
        firsts = [r.connects[0] for r in ledger.devices.values() if r.connects]
        if firsts:
            # The probe once every device is up: the ramp's connection burst left out.
            out["all_connected_s"] = round(max(firsts) - ledger.started, 1)
            samples = [(t, v) for t, v in read_probe(folder) if t >= max(firsts)]
            out["probe_at_full_strength"] = asdict(latency_of(samples))
        if "broker_start" in events:
            out["storm"] = _reconnects(ledger, events["broker_start"])
        if scenario.steps:
            out["steps"] = _steps(folder, ledger.started, scenario)
    return out


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _steady_rate(history: Path) -> float:
    """Median of the acknowledged MQTT messages per second over the seconds with every user running
    (the ramp left out: its first seconds have few devices and Locust's rate is a 10-s average)."""
    per_second: dict[str, float] = {}
    users: dict[str, int] = {}
    with history.open() as f:
        for r in csv.DictReader(f):
            if r["Type"] == "MQTT":
                per_second[r["Timestamp"]] = per_second.get(r["Timestamp"], 0.0) + float(r["Requests/s"])
            elif r["Name"] == "Aggregated":
                users[r["Timestamp"]] = int(r["User Count"])
    full = max(users.values(), default=0)
    times = sorted(t for t, n in users.items() if n == full)
    steady = set(times[10:]) if len(times) > 20 else set(times)
    values = sorted(v for t, v in per_second.items() if t in steady)
    return values[len(values) // 2] if values else 0.0


def _peak_users(history: Path) -> int:
    with history.open() as f:
        return max((int(r["User Count"]) for r in csv.DictReader(f) if r["Name"] == "Aggregated"), default=0)


def _resources(path: Path) -> dict[str, dict[str, float]]:
    by: dict[str, list[tuple[float, float]]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            by.setdefault(r["process"], []).append((float(r["cpu_pct"]), float(r["rss_mb"])))
    out = {}
    for name, rows in by.items():
        cpu = sorted(c for c, _ in rows[1:]) or [0.0]
        out[name] = {
            "cpu_mean_pct": round(sum(cpu) / len(cpu), 1),
            "cpu_p95_pct": round(percentile(cpu, 0.95) or 0.0, 1),
            "rss_max_mb": round(max(m for _, m in rows), 1),
        }
    return out


def _reconnects(ledger: Ledger, broker_start: float) -> dict[str, Any]:
    delays = []
    stayed_away = 0
    for record in ledger.devices.values():
        after = [t for t in record.connects if t >= broker_start]
        if after:
            delays.append(after[0] - broker_start)
        else:
            stayed_away += 1
    delays.sort()
    return {
        "reconnected": len(delays),
        "not_reconnected": stayed_away,
        "p50_s": round(percentile(delays, 0.5) or 0.0, 2),
        "p99_s": round(percentile(delays, 0.99) or 0.0, 2),
        "max_s": round(delays[-1], 2) if delays else None,
    }


def _steps(folder: Path, started: float, scenario: Scenario) -> list[dict[str, Any]]:
    """Per step: the multiplier, acknowledged msg/s, probe latency; 'sustained' when the probe kept up."""
    rates: dict[int, list[float]] = {}
    per_second: dict[int, float] = {}
    last = 0
    with (folder / "locust_stats_history.csv").open() as f:
        for r in csv.DictReader(f):
            last = max(last, int(r["Timestamp"]))
            if r["Type"] == "MQTT":
                t = int(r["Timestamp"])
                per_second[t] = per_second.get(t, 0.0) + float(r["Requests/s"])
    # A step's first 15 s are its ramp (and Locust's rate a 10-s average): each step is judged on
    # the rest, where the rate is sustained or not.
    ramp = min(15.0, scenario.step_s / 3)
    for t, rate in per_second.items():
        index = int((t - started) // scenario.step_s)
        if 0 <= index < len(scenario.steps) and (t - started) - index * scenario.step_s >= ramp:
            rates.setdefault(index, []).append(rate)
    probes = read_probe(folder)
    out = []
    for i, mult in enumerate(scenario.steps):
        lo, hi = started + i * scenario.step_s + ramp, started + (i + 1) * scenario.step_s
        if lo > last:  # the run ended before this step (or the probe ended it)
            break
        lat = latency_of([(t, v) for t, v in probes if lo <= t < hi])
        values = sorted(rates.get(i, [0.0]))  # no acknowledgement in the step's seconds: none per second
        out.append({
            "step": i + 1, "multiplier": mult, "msg_per_s": round(values[len(values) // 2], 1),
            "probe_p50_ms": lat.p50_ms, "probe_p99_ms": lat.p99_ms, "probe_timeouts": lat.timeouts,
            "sustained": lat.timeouts == 0 and lat.p99_ms is not None and lat.p99_ms < 1000,
        })  # fmt: skip
    return out


def report_lines(o: Outcome) -> str:
    v, s = o.verdict, o.stats
    lat = v.latency
    lines = [
        f"== {o.scenario}: {'PASS' if o.ok else 'FAIL'}  ({o.folder})",
        f"   devices {v.devices:,} (connected {s.get('connected_devices', '?')}, at the end "
        f"{s.get('connected_at_end', '?')}), "
        f"peak users {s.get('peak_users', '?')}, {s.get('messages_per_s', 0):,.0f} msg/s acknowledged "
        "(median second at full strength)",
        f"   readings acknowledged {v.acked:,}; stored {v.stored:,}; MISSING {v.missing:,}; "
        f"duplicates {v.duplicates:,}; unexpected {v.unexpected:,};",
        f"   unacknowledged at the end {v.unacked:,} ({v.unacked_stored:,} stored anyway); refused {v.refused:,}",
        f"   publish-to-queryable (probe, {lat.samples} readings, {lat.timeouts} timed out): p50 {_ms(lat.p50_ms)}, "
        f"p90 {_ms(lat.p90_ms)}, p99 {_ms(lat.p99_ms)}, max {_ms(lat.max_ms)}",
    ]
    full = s.get("probe_at_full_strength")
    if full and full["samples"]:
        lines.append(f"   ... once all devices were connected ({s['all_connected_s']} s in; {full['samples']} "
                     f"readings, {full['timeouts']} timed out): p50 {_ms(full['p50_ms'])}, p90 {_ms(full['p90_ms'])}, "
                     f"p99 {_ms(full['p99_ms'])}, max {_ms(full['max_ms'])}")  # fmt: skip
    for kind, examples in v.examples.items():
        lines.append(f"   {kind}: " + "; ".join(examples[:3]))
    if "storm" in s:
        st = s["storm"]
        lines.append(f"   storm: {st['reconnected']:,} devices reconnected after the restart (p50 {st['p50_s']} s, "
                     f"p99 {st['p99_s']} s, max {st['max_s']} s), {st['not_reconnected']} did not")  # fmt: skip
    for step in s.get("steps", []):
        lines.append(f"   step {step['step']:2} x{step['multiplier']:<4}: {step['msg_per_s']:8,.0f} msg/s, probe p50 "
                     f"{_ms(step['probe_p50_ms'])} p99 {_ms(step['probe_p99_ms'])}"
                     f"{'' if step['sustained'] else '  (behind)'}")  # fmt: skip
    for name, r in s.get("resources", {}).items():
        lines.append(f"   {name:10} CPU mean {r['cpu_mean_pct']:5.1f} % (p95 {r['cpu_p95_pct']:5.1f} %), "
                     f"RSS max {r['rss_max_mb']:7.1f} MB")  # fmt: skip
    return "\n".join(lines)


def report_folder(folder: Path) -> str:
    """The report of a finished run, its figures recomputed from the folder's files."""
    saved = json.loads((folder / "verify.json").read_text())
    verdict = Verdict(**{k: v for k, v in saved["verdict"].items() if k not in ("ok", "latency")})
    verdict.latency = latency_of(read_probe(folder))
    scenario = SCENARIOS[RunPlan.read(folder).scenario].scaled(RunPlan.read(folder).duration_s)
    outcome = Outcome(scenario.name, folder, verdict, 0, summarize(folder, saved.get("events", {}), scenario))
    return report_lines(outcome)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"
