"""The peer a user would pick instead of ``estatewatch ingest``: Node-RED 4 with
node-red-contrib-influxdb, installed from npm into a cache folder once, running the flow
mqtt in (QoS 1, persistent session) -> function (payload to a point, the registry's tags) ->
join (1,000 messages or 0.2 s) -> influxdb batch. Node-RED's MQTT client (MQTT.js) acknowledges a
message on receipt, before anything is stored.
"""

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from devices.topics import device_topic
from devices.types import Channel, DeviceType
from runtime.settings import MqttTarget
from stack.procs import free_port
from store.registry.db import DeviceInfo

PACKAGES = ("node-red@4", "node-red-contrib-influxdb@0.7")
READY_TIMEOUT_S = 90.0
Say = Callable[[str], None]
SUBSCRIPTION = device_topic("+", DeviceType.SMOKE_SENSOR, "+", Channel.TELEMETRY)

FUNCTION = """
const d = msg.payload;
const p = msg.topic.split('/');
const dev = global.get('devices')[p[2] + '/' + p[4]] || {};
const tags = {site: p[2], device_type: p[3], device_id: p[4]};
for (const k of ['building', 'unit', 'zone', 'grid']) { if (dev[k]) tags[k] = dev[k]; }
msg.payload = {
  measurement: 'smoke_sensor', tags: tags, timestamp: d.ts,
  fields: {seq: d.seq, state: d.state, smoke_obscuration_pct: d.smoke_obscuration_pct, temp_c: d.temp_c,
           battery_pct: d.battery_pct, rssi_dbm: d.rssi_dbm},
};
return msg;
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "estatewatch" / "node-red"


def install(folder: Path, say: Say) -> Path:
    """Node-RED's entry point, installed into ``folder`` on first use (npm, ~15 s)."""
    red = folder / "node_modules" / "node-red" / "red.js"
    if red.exists():
        return red
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"--peer node-red needs {tool} (Debian: apt-get install nodejs npm)")
    folder.mkdir(parents=True, exist_ok=True)
    say(f"  installing {' and '.join(PACKAGES)} from npm into {folder} (once)")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), *PACKAGES],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0 or not red.exists():
        raise RuntimeError(f"npm install of Node-RED failed: {done.stderr[-2000:]}")
    return red


# autoUnsubscribe off: by default Node-RED unsubscribes when it stops, and an offline persistent
# session then queues nothing. Ids with a prefix: Node-RED reads any property whose value equals a
# node's id as a reference to that node (a join node with id "join" made a "circular config node
# dependency").
def flow(
    mqtt: MqttTarget, client_id: str, influx_host: str, influx_port: int, database: str
) -> list[dict[str, object]]:
    return [
        {"id": "ew.tab", "type": "tab", "label": "estatewatch bench"},
        {"id": "ew.broker", "type": "mqtt-broker", "name": "estate", "broker": mqtt.host, "port": str(mqtt.port),
         "clientid": client_id, "autoConnect": True, "usetls": False, "protocolVersion": "5", "keepalive": "30",
         "cleansession": False, "sessionExpiry": "120", "autoUnsubscribe": False, "birthTopic": "",
         "closeTopic": "", "willTopic": ""},
        {"id": "ew.in", "type": "mqtt in", "z": "ew.tab", "topic": SUBSCRIPTION, "qos": "1",
         "datatype": "json", "broker": "ew.broker", "nl": False, "rap": False, "rh": 0, "inputs": 0,
         "wires": [["ew.fn"]]},
        {"id": "ew.fn", "type": "function", "z": "ew.tab", "func": FUNCTION, "outputs": 1, "wires": [["ew.join"]]},
        {"id": "ew.join", "type": "join", "z": "ew.tab", "mode": "custom", "build": "array", "property": "payload",
         "propertyType": "msg", "key": "topic", "joiner": "\\n", "joinerType": "str", "accumulate": False,
         "timeout": "0.2", "count": "1000", "reduceRight": False, "wires": [["ew.batch"]]},
        {"id": "ew.batch", "type": "influxdb batch", "z": "ew.tab", "influxdb": "ew.influx", "precision": "ms",
         "retentionPolicy": "", "wires": []},
        {"id": "ew.influx", "type": "influxdb", "hostname": influx_host, "port": str(influx_port), "protocol": "http",
         "database": database, "name": "", "usetls": False, "influxdbVersion": "1.x"},
    ]  # fmt: skip


SETTINGS_JS = """module.exports = {
  uiPort: %d, uiHost: "127.0.0.1", httpAdminRoot: false, httpNodeRoot: false,
  credentialSecret: false, flowFile: "flows.json",
  functionGlobalContext: { devices: require("./devices.json") },
  logging: { console: { level: "info", metrics: false, audit: false } },
};
"""


class NodeRed:
    """One Node-RED process with the flow above, in a user folder of its own."""

    def __init__(self, red: Path, folder: Path, mqtt: MqttTarget, influx: tuple[str, int], database: str,
                 devices: list[DeviceInfo], client_id: str) -> None:  # fmt: skip
        self.red, self.folder = red, folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.js").write_text(SETTINGS_JS % free_port())
        (folder / "flows.json").write_text(json.dumps(flow(mqtt, client_id, influx[0], influx[1], database)))
        creds = {"ew.broker": {"user": mqtt.username or "", "password": mqtt.password or ""}, "ew.influx": {}}
        (folder / "flows_cred.json").write_text(json.dumps(creds))
        tags = {f"{d.site}/{d.id}": {"building": d.building, "unit": d.unit, "zone": d.zone, "grid": d.grid}
                for d in devices}  # fmt: skip
        (folder / "devices.json").write_text(json.dumps(tags))
        self.client_id = client_id
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self) -> int:
        """Started and connected to the broker; returns its pid."""
        self.proc = subprocess.Popen(
            ["node", str(self.red), "--userDir", str(self.folder), "--settings", str(self.folder / "settings.js")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        connected = threading.Event()

        def read(out: object) -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                if "Connected to broker" in line:
                    connected.set()

        threading.Thread(target=read, args=(None,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not connected.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Node-RED did not connect to the broker:\n" + "\n".join(self.log[-30:]))
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
