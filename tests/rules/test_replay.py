"""``estatewatch rules replay``: the simulator's incidents, played without a broker (sim/play.py),
through the engine, by the CLI."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from devices.estate import Estate, dump_estate
from sim.incidents import Incident
from sim.play import play


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estatewatch", "rules", "replay", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


def record_incidents(
    estate: Estate,
    folder: Path,
    *incidents: str,
    speed: float,
    seconds: float,
    seed: int,
    start_ms: int | None = None,
) -> tuple[Path, Path]:
    """What the simulator would record of ``estate`` with ``incidents`` (injected a second in) over
    ``seconds`` at ``speed``, played in event time; returns the recording and the estate file."""
    record = folder / "sent.jsonl"
    lines = play(
        estate, estate.devices, seed=seed, start_ms=start_ms or int(time.time() * 1000),
        duration_ms=int(seconds * speed * 1000), incidents=[Incident.parse(i) for i in incidents],
        incident_after_ms=int(speed * 1000),
    )  # fmt: skip
    record.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    estate_file = folder / "estate.yaml"
    estate_file.write_text(dump_estate(estate), encoding="utf-8")
    return record, estate_file


def alert_changes(record: Path, estate_file: Path, rule: str) -> list[dict[str, object]]:
    result = replay(str(record), "--estate", str(estate_file))
    assert result.returncode == 0, result.stderr
    return [c for c in (json.loads(line) for line in result.stdout.splitlines()) if c["rule"] == rule]


def test_recorded_incidents_replay_into_alerts(small: Estate, tmp_path: Path) -> None:
    record, estate_file = record_incidents(
        small, tmp_path, "smoke_alarm:smk-b001-u1-101", "sos:radio-01", speed=30, seconds=4, seed=3
    )
    result = replay(str(record), "--estate", str(estate_file))
    assert result.returncode == 0, result.stderr
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(list(c)[:5] == ["rule", "subject", "state", "severity", "ts"] for c in changes)
    fire = [c for c in changes if c["rule"] == "fire"]
    sos = [c for c in changes if c["rule"] == "sos"]
    assert fire[0]["subject"] == "smk-b001-u1-101" and fire[0]["severity"] == "critical"
    assert fire[0]["change"] == "opened" and all(c["change"] == "repeated" for c in fire[1:])
    assert len(sos) == 1 and sos[0]["subject"] == "radio-01"
    assert "readings" in result.stderr

    # Replay is deterministic: the recorded timestamps are the clock.
    assert replay(str(record), "--estate", str(estate_file)).stdout == result.stdout


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "estate/v1/x/radio/r/event", "payload": {}}\nnot json\n')
    result = replay(str(bad))
    assert result.returncode == 1
    assert f"{bad}:2: not a" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_config_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("rules:\n  sos:\n    enabled: maybe\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = replay(str(empty), "--config", str(cfg))
    assert result.returncode == 1
    assert "line 3: rules.sos.enabled" in result.stderr


def test_the_simulators_flying_lead_is_caught(small: Estate, tmp_path: Path) -> None:
    import datetime as dt

    evening = int(dt.datetime(2026, 12, 1, 19, 0, tzinfo=small.site.tz).timestamp() * 1000)
    record, estate_file = record_incidents(
        small, tmp_path, "flying_lead:pm-b001-u1", speed=60, seconds=14, seed=4, start_ms=evening
    )
    flying = alert_changes(record, estate_file, "flying_lead")
    assert flying and flying[0]["change"] == "opened" and flying[0]["unit"] == "b001-u1"
    # The simulator's camera saw the e-bike go up in the lift 20 minutes before.
    assert flying[0]["evidence"][0]["ebike_seen"] is True


def test_the_simulators_blocked_fire_lane_is_caught(small: Estate, tmp_path: Path) -> None:
    record, estate_file = record_incidents(
        small, tmp_path, "blocked_fire_lane:fl-01", speed=40, seconds=12, seed=6
    )
    lane = alert_changes(record, estate_file, "fire_lane")
    assert [c["escalation"] for c in lane][:2] == [0, 1], lane
    assert lane[1]["evidence"][-1]["plate"], "the camera read the blocking car's plate"


def test_an_18_minute_block_gives_the_voice_and_the_grid_on_time_and_no_critical(
    small: Estate, tmp_path: Path
) -> None:
    """A recorded day's hour: the lane clear for ten minutes (its sensor reporting so), then a car for
    18 minutes (the sensor every 30 s, one flicker), then gone; radios keep the clock moving."""
    start = 1_796_104_800_000  # 2026-12-01 15:00 +08:00
    arrival = start + 10 * 60_000
    lines = []
    seq = 0

    def add(ts: int, device_type: str, device: str, channel: str, body: dict[str, object]) -> None:
        nonlocal seq
        seq += 1
        lines.append((ts, {"topic": f"estate/v1/small/{device_type}/{device}/{channel}",
                           "payload": {"ts": ts, "seq": seq, **body}}))  # fmt: skip

    for ts in range(start, arrival + 25 * 60_000, 30_000):
        blocked = arrival <= ts < arrival + 18 * 60_000 and ts != arrival + 7 * 60_000  # one clear reading
        add(ts + 7, "space_sensor", "sp-fl-01-1", "telemetry", {"occupied": blocked, "battery_pct": 80.0})
    add(arrival, "camera", "cam-fl-01", "event", {"type": "zone_occupied", "zone": "fl-01", "object_kind": "car",
                                                  "plate": "苏C·A1200", "confidence": 0.95})  # fmt: skip
    add(arrival + 18 * 60_000, "camera", "cam-fl-01", "event", {"type": "zone_cleared", "zone": "fl-01"})
    for ts in range(start, arrival + 25 * 60_000, 5_000):
        add(ts, "radio", "radio-01", "telemetry", {"lat": 34.24, "lon": 117.23, "accuracy_m": 5.0, "speed_m_s": 0.0,
                                                   "battery_pct": 80.0})  # fmt: skip
    recording = tmp_path / "day.jsonl"
    ordered = sorted(lines, key=lambda x: x[0])
    recording.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for _, doc in ordered))
    estate_file = tmp_path / "estate.yaml"
    estate_file.write_text(dump_estate(small))
    done = replay(str(recording), "--estate", str(estate_file))
    assert done.returncode == 0, done.stderr
    lane = [json.loads(x) for x in done.stdout.splitlines() if json.loads(x)["rule"] == "fire_lane"]
    stages = {c["escalation"]: c["ts"] for c in lane if c["change"] != "resolved"}
    assert set(stages) == {0, 1}, "voice and grid, never critical for 18 minutes"
    assert arrival + 90_000 <= stages[0] <= arrival + 90_000 + 5_000 + 1000
    assert arrival + 300_000 <= stages[1] <= arrival + 300_000 + 5_000 + 1000
    assert lane[-1]["change"] == "resolved"
    assert lane[0]["evidence"][-1]["plate"] == "苏CA1200"
