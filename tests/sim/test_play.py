"""``sim.play`` writes what the live simulator would record, without a broker or a clock."""

import json
from pathlib import Path

from devices.estate import Estate
from runtime.settings import parse_mqtt_url
from sim.play import play
from sim.runner import SimOptions, Simulator
from tests.support.servers import Broker

START = 1_764_583_200_000  # 2025-12-01 18:00 in Xuzhou: a busy hour, no hour boundary for a while


def _shape(line: dict[str, object], shift_ms: int) -> tuple[object, ...]:
    """A message as topic, and per reading its seq, its fields and its stamp moved by ``shift_ms``
    (values that follow the clock, a radio's position, move with it and are left out)."""
    payload = line["payload"]
    items = payload if isinstance(payload, list) else [payload]
    return (line["topic"], *((i["seq"], tuple(sorted(i)), int(i["ts"]) + shift_ms) for i in items))  # type: ignore[index]


async def test_play_is_what_the_live_simulator_records(broker: Broker, small: Estate, tmp_path: Path) -> None:
    record = tmp_path / "live.jsonl"
    options = SimOptions(mqtt=parse_mqtt_url(broker.url("simulator")), speed=20, duration_s=3, seed=5,
                         start_ms=START, record=record)  # fmt: skip
    async with Simulator(small, small.devices, options) as sim:
        await sim.run()
    live = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert len(live) > 50
    played = list(play(small, small.devices, seed=5, start_ms=START, duration_ms=60_000 * 2))
    # The live clock starts when the devices are connected, a moment after START: the same
    # messages in the same order, every stamp later by that moment.
    first_live = live[0]["payload"]
    first_played = next(p for p in played if p["topic"] == live[0]["topic"])["payload"]
    assert isinstance(first_live, dict) and isinstance(first_played, dict)
    offset = int(first_live["ts"]) - int(first_played["ts"])
    assert [_shape(x, 0) for x in live] == [_shape(p, offset) for p in played[: len(live)]]


def test_simulate_offline_writes_a_recording_without_a_broker(small: Estate, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from devices.estate import dump_estate
    from stack.procs import free_port

    estate, record = tmp_path / "estate.yaml", tmp_path / "played.jsonl"
    estate.write_text(dump_estate(small), encoding="utf-8")
    env = {**os.environ, "ESTATEWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "estatewatch", "simulate", "--offline", "true", "--estate", str(estate),
         "--record", str(record), "--duration", "60", "--speed", "60", "--incident", "smoke_alarm"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    summary = json.loads(result.stderr.strip().splitlines()[-1])["played"]
    assert summary["messages"] == len(lines) > 1000 and summary["estate_ms"] == 3_600_000
    alarms = [x for x in lines if x["topic"].endswith("/event") and '"alarm"' in json.dumps(x["payload"])]
    assert alarms, "the smoke alarm incident is in the recording"
    missing = subprocess.run([sys.executable, "-m", "estatewatch", "simulate", "--offline", "true"],
                             capture_output=True, text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 1 and "give both" in missing.stderr
