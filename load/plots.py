"""PNG plots of a load run from its CSV reports: messages per second and latency over time."""

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from load.ledger import read_probe


def _mqtt_rate(history: Path) -> tuple[list[float], list[float], list[float]]:
    """Seconds since the first row, acknowledged msg/s (all device types), users."""
    rate: dict[int, float] = {}
    users: dict[int, float] = {}
    with history.open() as f:
        for r in csv.DictReader(f):
            t = int(r["Timestamp"])
            if r["Type"] == "MQTT":
                rate[t] = rate.get(t, 0.0) + float(r["Requests/s"])
            if r["Name"] == "Aggregated":
                users[t] = float(r["User Count"])
    if not users:
        return [], [], []
    t0 = min(users)
    times = sorted(users)
    return [t - t0 for t in times], [rate.get(t, 0.0) for t in times], [users[t] for t in times]


def _events(folder: Path) -> dict[str, float]:
    try:
        events: dict[str, float] = json.loads((folder / "verify.json").read_text()).get("events", {})
    except (OSError, ValueError):
        return {}
    return events


def plot_run(folder: Path, out: Path | None = None) -> list[Path]:
    """One PNG per run (throughput on top, the probe's latency below), named after the scenario."""
    history = folder / "locust_stats_history.csv"
    if not history.exists():
        return []
    scenario = json.loads((folder / "plan.json").read_text())["scenario"]
    times, rate, users = _mqtt_rate(history)
    t0 = float(next(csv.reader(history.open().readlines()[1:2]))[0]) if times else 0.0
    probes = read_probe(folder)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    top.plot(times, rate, color="tab:blue", label="acknowledged msg/s")
    top.set_ylabel("messages / s")
    twin = top.twinx()
    twin.plot(times, users, color="tab:gray", linestyle="--", label="users (devices)")
    twin.set_ylabel("users")
    top.set_title(f"EstateWatch load: {scenario}")
    top.legend(loc="upper left")
    twin.legend(loc="upper right")
    xs = [t - t0 for t, v in probes if v is not None]
    ys = [v for _, v in probes if v is not None]
    bottom.scatter(xs, ys, s=6, color="tab:orange", label="probe: publish to queryable")
    lost = [t - t0 for t, v in probes if v is None]
    if lost:
        bottom.scatter(lost, [max(ys, default=1000)] * len(lost), marker="x", color="tab:red", label="probe timed out")
    bottom.axhline(1000, color="tab:red", linewidth=0.8, linestyle=":", label="1 s target")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency, ms")
    bottom.set_xlabel("seconds since Locust started")
    bottom.legend(loc="upper left")
    events = _events(folder)
    if "broker_stop" in events and "broker_start" in events:
        for ax in (top, bottom):
            ax.axvspan(events["broker_stop"] - t0, events["broker_start"] - t0, color="tab:red", alpha=0.12)
        top.text(events["broker_stop"] - t0, top.get_ylim()[1] * 0.9, " broker down", color="tab:red", fontsize=8)
    target = (out or folder) / f"load-{scenario}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return [target]
