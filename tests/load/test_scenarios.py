"""Each load scenario, small (41 devices, seconds long), through ``estatewatch load run`` as users run
it: a platform of its own (real Mosquitto, influxd, ingest, rules, API), Locust with two processes,
the verifier; and the verifier catching a loss and a duplicate caused in a finished run's data."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from load.ledger import Ledger
from stack.influx import InfluxLayout
from stack.procs import free_port

DEVICES = 40  # spread over the eight types, plus the probe


def load_run(root: Path, scenario: str, seconds: float, *extra: str) -> tuple[int, Path, dict[str, Any]]:
    out = root / scenario
    proc = subprocess.run(
        [sys.executable, "-m", "estatewatch", "load", "run", scenario, "--load-devices", str(DEVICES),
         "--load-duration-s", str(seconds), "--load-results-dir", str(out), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    folders = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    assert len(folders) == 1, proc.stdout + proc.stderr
    report = folders[0] / "verify.json"
    assert report.exists(), proc.stdout + proc.stderr
    return proc.returncode, folders[0], json.loads(report.read_text())


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    return load_run(tmp_path_factory.mktemp("load"), "normal", 10)


def test_normal_day_every_device_connected_nothing_lost(normal: tuple[int, Path, dict[str, Any]]) -> None:
    code, folder, report = normal
    verdict, stats = report["verdict"], report["stats"]
    assert code == 0 and verdict["ok"]
    assert verdict["devices"] == DEVICES + 1
    assert stats["connected_devices"] == DEVICES + 1 and stats["connected_at_end"] == DEVICES + 1
    assert verdict["acked"] > 0 and verdict["missing"] == 0 and verdict["duplicates"] == 0
    assert verdict["stored"] >= verdict["acked"]
    latency = verdict["latency"]
    assert latency["samples"] >= 4 and latency["timeouts"] == 0 and 0 < latency["p99_ms"] < 5000
    # Every process played its own devices: two ledgers, no device twice (Ledger.read checks).
    assert len(list(folder.glob("ledger-*.json"))) == 2
    assert len(Ledger.read(folder).devices) == DEVICES + 1
    for name in ("report.html", "locust_stats.csv", "locust_stats_history.csv", "procstat.csv", "load-normal.png"):
        assert (folder / name).stat().st_size > 0, name
    assert {"mosquitto", "influxd", "ingest", "rules", "api", "locust"} <= set(stats["resources"])
    # People on the API in the same run: engineers' ranges and grid workers' alert polls.
    assert stats["api"]["alerts: my grid's open ones"]["requests"] > 0
    assert any(k.startswith("range:") and v["requests"] > 0 for k, v in stats["api"].items())
    assert all(v["failures"] == 0 for v in stats["api"].values())
    again = subprocess.run([sys.executable, "-m", "estatewatch", "load", "report", str(folder)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert "== normal: PASS" in again.stdout and f"readings acknowledged {verdict['acked']:,};" in again.stdout


def test_the_verifier_catches_a_loss_and_a_duplicate(normal: tuple[int, Path, dict[str, Any]]) -> None:
    """The run's own InfluxDB data, started again: verified clean, then points deleted and one written
    twice; ``estatewatch load verify`` must name both and exit 1."""
    _, folder, _ = normal
    ledger = Ledger.read(folder)
    lossy, record = next((d, r) for d, r in sorted(ledger.devices.items()) if len(r.acked) >= 2)
    twice, twice_record = next((d, r) for d, r in sorted(ledger.devices.items()) if r.acked and d != lossy)
    port = free_port()
    layout = InfluxLayout(folder / "stack" / "influxdb", port, free_port())
    layout.prepare()
    layout.start()
    try:

        def verify() -> tuple[int, dict[str, Any]]:
            proc = subprocess.run(
                [sys.executable, "-m", "estatewatch", "load", "verify", str(folder),
                 "--influx-url", layout.url, "--influx-database", "estate"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            return proc.returncode, json.loads(proc.stdout)

        code, clean = verify()
        assert code == 0 and clean["missing"] == 0 and clean["acked"] == report_acked(folder)

        def influxql(q: str) -> None:
            httpx.post(f"{layout.url}/query", data={"db": "estate", "q": q}).raise_for_status()

        influxql(f"DROP SERIES FROM /.*/ WHERE \"device_id\" = '{lossy}'")
        # The same reading stored again under another timestamp: what a device resending with a new
        # ts, or a writer that re-stamps, would leave behind.
        measurement = twice_record.type
        seq = min(twice_record.acked)
        site = ledger.site
        line = f"{measurement},site={site},device_id={twice} seq={seq}i {int(ledger.started * 1e9) + 12345}"
        httpx.post(f"{layout.url}/write", params={"db": "estate"}, content=line.encode()).raise_for_status()

        code, caught = verify()
        assert code == 1 and not caught["ok"]
        assert caught["missing"] == len(record.acked)
        assert caught["duplicates"] == 1
        assert any(e.startswith(f"{lossy}:") for e in caught["examples"]["missing"])
        assert any(e.startswith(f"{twice}:") for e in caught["examples"]["duplicates"])
    finally:
        layout.server().stop()


def report_acked(folder: Path) -> int:
    return int(json.loads((folder / "verify.json").read_text())["verdict"]["acked"])


def test_evening_peak(tmp_path: Path) -> None:
    code, _, report = load_run(tmp_path, "peak", 8, "--load-api", "false")
    assert code == 0 and report["verdict"]["ok"] and report["verdict"]["acked"] > 0
    assert report["stats"]["connected_at_end"] == DEVICES + 1


def test_reconnect_storm_loses_nothing(tmp_path: Path) -> None:
    code, folder, report = load_run(tmp_path, "storm", 26, "--load-api", "false")
    verdict, stats, events = report["verdict"], report["stats"], report["events"]
    assert code == 0 and verdict["ok"], verdict
    assert events["broker_start"] > events["broker_stop"] > events["test_start"]
    storm = stats["storm"]
    assert storm["reconnected"] == DEVICES + 1 and storm["not_reconnected"] == 0
    assert storm["max_s"] < 60
    # Every device lost its connection once, and came back.
    ledger = Ledger.read(folder)
    assert all(len(r.disconnects) >= 1 and r.connected_at_end for r in ledger.devices.values())


def test_step_up_raises_the_rate_step_by_step(tmp_path: Path) -> None:
    code, _, report = load_run(tmp_path, "stepup", 30, "--load-api", "false")
    assert code == 0 and report["verdict"]["ok"]
    steps = report["stats"]["steps"]
    assert len(steps) >= 6
    assert [s["multiplier"] for s in steps] == sorted(s["multiplier"] for s in steps)
    assert max(s["msg_per_s"] for s in steps[3:]) > 5 * max(steps[0]["msg_per_s"], 0.5)


def test_sigterm_stops_the_run_and_everything_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch", "load", "run", "normal", "--load-devices", "10",
         "--load-duration-s", "120", "--load-api", "false", "--load-results-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not list(tmp_path.glob("*/locust_stats_history.csv")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert list(tmp_path.glob("*/locust_stats_history.csv")), "Locust never started"
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "stopped" in err
    # Nothing of the run is left: no Locust, broker, influxd or service with its folder in the command line.
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path) in cmdline.read_bytes().decode(errors="replace"):
                left.append(cmdline.parent.name)
        except OSError:
            continue
    assert left == []
