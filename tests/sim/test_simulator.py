"""The simulator against a real Mosquitto: every device connects, publishes valid payloads on its topics."""

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from devices.catalog import parse_payload
from devices.estate import Estate
from devices.payloads.common import Status
from devices.topics import parse_topic
from devices.types import Channel
from runtime.settings import parse_mqtt_url
from sim.incidents import Incident
from sim.runner import SimOptions, Simulator
from tests.support.ingest import eventually
from tests.support.mqtt import Recorder, stop, subscribe
from tests.support.servers import PASSWORD, Broker


def readings_by_device(rec: Recorder) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    with rec.lock:
        messages = list(rec.messages)
    for topic, payload, _ in messages:
        t = parse_topic(topic)
        parsed = parse_payload(t.device_type, t.channel, payload)
        if not isinstance(parsed, Status):
            seqs[t.device_id].extend(r.seq for r in parsed)
    return seqs


async def test_every_device_publishes_valid_payloads_on_its_topics(broker: Broker, small: Estate) -> None:
    client, rec = subscribe(broker.port, "estate/v1/#")
    try:
        options = SimOptions(mqtt=parse_mqtt_url(broker.url("simulator")), speed=60, duration_s=7, seed=5)
        async with Simulator(small, small.devices, options) as sim:
            assert sim.stats.connected == len(small.devices)
            stats = await sim.run()
        assert rec.wait_for(lambda r: sum(len(s) for s in readings_by_device(r).values()) >= stats.readings, 15)
        assert rec.wait_for(lambda r: sum(1 for _, p, _ in r.messages if b'"offline"' in p) == len(small.devices))
    finally:
        stop(client)
    seqs = readings_by_device(rec)
    assert set(seqs) == {d.id for d in small.devices}, "every device published at least one reading"
    for device_id, got in seqs.items():
        assert sorted(got) == list(range(1, len(got) + 1)), f"{device_id}: seq not contiguous"
    assert stats.acked == stats.messages + stats.statuses
    for topic, payload, _ in rec.messages:
        t = parse_topic(topic)
        assert t.site == "small"
        device = next(d for d in small.devices if d.id == t.device_id)
        assert device.type is t.device_type
        if t.channel is Channel.STATUS:
            assert json.loads(payload)["state"] in ("online", "offline")


async def test_same_seed_same_traffic(broker: Broker, small: Estate) -> None:
    async def payloads() -> list[str]:
        from sim.behaviour import Fleet
        from sim.behaviours import behaviour_for

        fleet = Fleet.for_estate(9)
        out = []
        for d in small.devices:
            b = behaviour_for(d, small, 9, fleet)
            out += [json.dumps(o) for _, _, o in b.telemetry(1_764_590_400_000) + b.events(1_764_590_400_000)]
        return out

    assert await payloads() == await payloads()


async def test_incidents_are_injected(broker: Broker, small: Estate) -> None:
    client, rec = subscribe(broker.port, "estate/v1/#")
    incidents = tuple(
        Incident.parse(s)
        for s in (
            "smoke_alarm:smk-b001-u1-101",
            "sos:radio-01",
            "blocked_fire_lane:fl-01",
            "flying_lead:pm-b001-u1",
            "zombie_car:sp-pk-s01-01",
            "silent:door-b001-u1",
        )
    )
    try:
        options = SimOptions(
            mqtt=parse_mqtt_url(broker.url("simulator")),
            speed=30,
            duration_s=6,
            seed=2,
            incidents=incidents,
            incident_delay_s=1.0,
        )
        async with Simulator(small, small.devices, options) as sim:
            await sim.run()
        assert len(sim.injected) == 6

        def events(device: str) -> list[dict[str, object]]:
            out = []
            with rec.lock:
                messages = list(rec.messages)
            for topic, payload, _ in messages:
                if topic.endswith(f"/{device}/event"):
                    body = json.loads(payload)
                    out += body if isinstance(body, list) else [body]
            return out

        def every_incident_heard() -> bool:
            return (
                any(e["type"] == "alarm" for e in events("smk-b001-u1-101"))
                and any(e["type"] == "sos" for e in events("radio-01"))
                and any(e["type"] == "zone_occupied" and e.get("plate") for e in events("cam-fl-01"))
                and any(e["type"] == "occupied" for e in events("sp-fl-01-1"))
                and any(e["type"] == "ebike_detected" for e in events("cam-b001-u1"))
            )

        # Every publish was acknowledged before the simulator left; the recorder may still be reading.
        assert await eventually(every_incident_heard), "an injected incident never reached the broker"
    finally:
        stop(client)
    meter = [json.loads(p) for t, p, _ in rec.messages if t.endswith("/pm-b001-u1/telemetry")]
    assert max(m["power_w"] for m in meter) > 200, "the injected charger shows on the corridor circuit"
    gate_reads = [e for e in events("vg-north") if e["type"] == "plate_read"]
    assert any(e["ts"] < sim.now_ms() - 30 * 86_400_000 and e["direction"] == "in" for e in gate_reads), (
        "the zombie car's last 'in' read lies weeks back"
    )
    silent = [p for t, p, _ in rec.messages if t.endswith("/door-b001-u1/telemetry")]
    talking = [p for t, p, _ in rec.messages if t.endswith("/door-b001-u2/telemetry")]
    assert len(silent) <= 1 < len(talking), "the silent door stops reporting after the first second"


async def test_survives_a_broker_restart_without_loss(broker: Broker, small: Estate) -> None:
    """Mosquitto stopped (SIGTERM) and started again mid-run: devices reconnect and nothing is lost."""
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="persistent-recorder", protocol=paho.MQTTv5)
    sub.username_pw_set("service", PASSWORD)
    rec = Recorder()
    sub.on_message = lambda c, u, m: rec.messages.append((m.topic, m.payload, bool(m.retain)))
    props = Properties(paho.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("estate/v1/+/+/+/+", qos=1)
    sub.reconnect_delay_set(0.2, 1)
    sub.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    sub.loop_start()
    try:
        options = SimOptions(mqtt=parse_mqtt_url(broker.url("simulator")), speed=60, duration_s=12, seed=7)
        async with Simulator(small, small.devices, options) as sim:
            run = asyncio.create_task(sim.run())
            assert await eventually(lambda: sim.stats.acked > 200, 20), "the broker acknowledges readings"
            await asyncio.to_thread(broker.stop)
            sent_before = sim.stats.messages
            # Devices keep publishing into gmqtt's queue meanwhile.
            assert await eventually(lambda: sim.stats.messages > sent_before + 100, 20)
            await asyncio.to_thread(broker.start)
            stats = await run
        assert stats.reconnects >= len(small.devices)
        last = sim.last_seq()
        assert rec.wait_for(lambda r: {k: max(v) for k, v in readings_by_device(r).items()} == last, 30)
    finally:
        sub.disconnect()
        sub.loop_stop()
    for device_id, got in readings_by_device(rec).items():
        assert set(got) == set(range(1, last[device_id] + 1)), f"{device_id} lost readings over the restart"


def test_cli_simulates_in_several_processes(broker: Broker, small: Estate, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from devices.estate import dump_estate

    estate_file = tmp_path / "small.yaml"
    estate_file.write_text(dump_estate(small), encoding="utf-8")
    client, rec = subscribe(broker.port, "estate/v1/+/+/+/telemetry", client_id="multi-recorder")
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "estatewatch",
                "simulate",
                "--estate",
                str(estate_file),
                "--mqtt-url",
                broker.url("simulator"),
                "--processes",
                "2",
                "--speed",
                "60",
                "--duration",
                "6",
                "--progress-every",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert rec.wait_for(lambda r: len({t.split("/")[4] for t in r.topics()}) == len(small.devices), 10)
    finally:
        stop(client)
    totals = json.loads(result.stderr.strip().splitlines()[-1])["simulated"]
    assert totals["devices"] == len(small.devices)
    assert totals["acked"] == totals["messages"] + totals["statuses"]
    assert "connected" in result.stderr and "msg/s" in result.stderr


def test_wrong_credentials_are_a_clear_error_for_simulator_and_ingest(broker: Broker, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    bad = f"mqtt://simulator:wrong@127.0.0.1:{broker.port}"
    for args in (["simulate", "--limit", "3", "--duration", "1"], ["ingest", "--ingest-metrics-port", "0"]):
        env = {
            **os.environ,
            "ESTATEWATCH_MQTT_URL": bad,
            "ESTATEWATCH_RUN_DIR": str(tmp_path / "run"),
            "ESTATEWATCH_DB_URL": f"sqlite+aiosqlite:///{tmp_path}/r.db",
        }
        result = subprocess.run(
            [sys.executable, "-m", "estatewatch", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert result.returncode == 1, (args, result.stderr[-1500:])
        assert "refused the connection" in result.stderr and "Not authorized" in result.stderr
        assert "Traceback" not in result.stderr


def test_sigterm_stops_publishing_waits_for_acks_and_exits_0(broker: Broker, small: Estate, tmp_path: Path) -> None:
    """The simulator runs under the services' runtime: SIGTERM drains (every publish acknowledged,
    every device offline by its will) and the exit code is 0."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from devices.estate import dump_estate

    estate_file = tmp_path / "small.yaml"
    estate_file.write_text(dump_estate(small), encoding="utf-8")
    client, rec = subscribe(broker.port, "estate/v1/+/+/+/status", client_id="status-recorder")
    args = ["simulate", "--estate", str(estate_file), "--mqtt-url", broker.url("simulator"), "--speed", "60"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch", *args, "--progress-every", "0.5"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    watchdog = threading.Timer(90, proc.kill)  # a hung simulator ends the loop below, and fails
    watchdog.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # running once every device is connected and something was sent
            if f"{len(small.devices)}/{len(small.devices)} connected" in line and "sent 0 " not in line:
                break
        else:
            raise AssertionError(f"the simulator ended by itself: exit {proc.wait()}")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest[-2000:]
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    try:

        def each_went_online_then_offline(r: Recorder) -> bool:
            states: dict[str, list[str]] = defaultdict(list)
            with r.lock:
                for topic, payload, _ in r.messages:
                    states[topic.split("/")[4]].append(json.loads(payload)["state"])
            return len(states) == len(small.devices) and all(
                "online" in s and s[-1] == "offline" for s in states.values()
            )

        assert rec.wait_for(each_went_online_then_offline, 10), "a device did not leave by its will"
    finally:
        stop(client)
    totals = json.loads(rest.strip().splitlines()[-1])["simulated"]
    assert totals["messages"] > 0
    assert totals["acked"] == totals["messages"] + totals["statuses"], "SIGTERM left publishes unacknowledged"
