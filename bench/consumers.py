"""The consumers ``estatewatch bench ingest`` and ``bench flood`` drive: ingest worker processes,
pools of them sharing a group, and Node-RED; each step's broker sessions ended once it is over."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from bench.drain import smoke_reading
from devices.topics import ROOT, device_topic
from devices.types import Channel
from runtime.settings import Settings, parse_mqtt_url
from stack.local import LocalStack
from stack.procs import free_port
from store.influx import Influx
from store.registry.db import DeviceInfo

Say = Callable[[str], None]


def forget_sessions(stack: LocalStack, client_ids: list[str]) -> None:
    """End a finished step's persistent sessions: a clean-start connect under each client id. Left
    alone, they keep collecting copies of every later step's messages, and Mosquitto writes them all
    to its persistence file at every autosave, stalling delivery for seconds (measured: 2.7 s every
    10 s in the latency step)."""
    for client_id in client_ids:
        forget = ["mosquitto_sub", "-V", "mqttv5", "-i", client_id, "-t", f"{ROOT}/_bench/none", "-E"]
        subprocess.run(mosq_cmd(forget, stack), capture_output=True, check=False, timeout=30)


def mosq_cmd(args: list[str], stack: LocalStack, user: str = "ingest") -> list[str]:
    mqtt = stack.settings.mqtt
    return [*args, "-h", mqtt.host, "-p", str(mqtt.port), "-u", user, "-P", stack.credentials()[user]]


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


class IngestPool:
    """``workers`` ingest processes sharing a group of their own (a Consumer for bench.drain)."""

    def __init__(self, stack: LocalStack, db: str, name: str, workers: int) -> None:
        self.pool = worker_pool(stack, db, name, workers)
        self.stack = stack

    def prepare(self) -> None:
        for w in self.pool:
            w.start()  # creates the persistent session and its shared subscription
            w.stop()

    def start(self) -> list[int]:
        for w in self.pool:
            w.start()
        return [w.proc.pid for w in self.pool if w.proc is not None]

    def stop(self) -> None:
        for w in self.pool:
            w.stop()

    def forget(self) -> None:
        forget_sessions(self.stack, [w.env["ESTATEWATCH_INGEST_CLIENT_ID"] for w in self.pool])


class NodeRedPeer:
    def __init__(self, stack: LocalStack, db: str, devices: list[DeviceInfo], say: Say) -> None:
        from bench import nodered

        red = nodered.install(nodered.cache_dir(), say)
        influx = httpx.URL(stack.settings.influx_url)
        run = f"bench-nodered-{os.getpid()}-{int(time.time())}"
        self.peer = nodered.NodeRed(
            red, stack.settings.run_dir / "bench" / run, parse_mqtt_url(stack.mqtt_url("ingest")),
            (influx.host, influx.port or 8086), db, devices, run,
        )  # fmt: skip
        self.stack, self.db, self.marker = stack, db, devices[0]

    def prepare(self) -> None:
        """Node-RED says "connected" before its mqtt-in node has subscribed: a marker reading through
        the flow shows the session has its subscription before it goes offline; the marker is deleted."""
        self.peer.start()
        topic = device_topic(self.marker.site, self.marker.type, self.marker.id, Channel.TELEMETRY)
        marker = json.dumps(smoke_reading(int(time.time() * 1000), 0))
        influx = self.stack.settings.influx_url
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                publish = ["mosquitto_pub", "-q", "1", "-t", topic, "-m", marker]
                subprocess.run(mosq_cmd(publish, self.stack, "simulator"), check=True, capture_output=True)
                for _ in range(10):
                    found = httpx.get(
                        f"{influx}/query", params={"db": self.db, "q": "SELECT count(seq) FROM smoke_sensor"}
                    )
                    if found.json()["results"][0].get("series"):
                        return
                    time.sleep(0.1)
            raise RuntimeError("Node-RED's flow stored nothing in 60 s:\n" + "\n".join(self.peer.log[-20:]))
        finally:
            self.peer.stop()
            httpx.post(f"{influx}/query", data={"db": self.db, "q": "DROP SERIES FROM smoke_sensor"})

    def start(self) -> list[int]:
        return [self.peer.start()]

    def stop(self) -> None:
        self.peer.stop()

    def forget(self) -> None:
        forget_sessions(self.stack, [self.peer.client_id])
