"""EstateWatch under Locust: one user per real device of the estate, a latency probe, and people on the API.

Run by ``estatewatch load run`` (which prepares the stack and the run folder), or by hand:
``locust -f load/locustfile.py --headless --processes 2 --ew-run-dir RUN`` where RUN holds a
``plan.json`` (see load/plan.py).

- A device user class per device type (``SmokeSensorUser``...), as many users as the estate has
  devices of that type; each user claims one device, connects as it (its own broker credentials),
  and publishes the protocol's payloads at its type's interval with the estate's rhythm at the
  scenario's hour, ``seq`` numbered, QoS 1. Locust's statistics count PUBACKs: response time is the
  broker's acknowledgement time.
- ``ProbeUser``: one extra device whose every reading is timed until InfluxDB answers with it
  ("publish-to-queryable").
- ``EngineerUser`` and ``GridWorkerUser``: telemetry ranges and alert polling through the API.
- ``ScenarioShape`` starts everything, holds it for the scenario's duration, and ends a step-up run
  once the probe shows the pipeline has fallen far behind.
"""

import datetime as dt
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import locust.runners
import requests
from locust import HttpUser, LoadTestShape, User, between, events, task
from locust.env import Environment

from devices.estate import Device, Estate, load_estate
from devices.types import Channel, DeviceType
from load.claims import claim
from load.device import Acked, DeviceClock, DeviceLink
from load.ledger import Ledger
from load.plan import RunPlan
from load.scenarios import SCENARIOS, Scenario
from sim.behaviour import Behaviour, Fleet
from sim.behaviours import behaviour_for
from store.dynsec import device_username

log = logging.getLogger("estatewatch.load")
PROBE = ("PROBE", "publish-to-queryable")
# A step-up run ends once the probe's median (Locust's last 10 s) is this far behind: well past
# "falling behind", and going on would only grow the backlog the verifier then waits for.
GIVE_UP_MS = 10_000
FLUSH_S = 15.0  # at the end, how long devices wait for their last PUBACKs
# A step-up drives the machine to saturation on purpose, and a busy worker's heartbeat is late: with
# Locust's 3 s the master declared both workers lost and ended a run mid-step. Allow 30 s; and the
# workers' last acknowledgements and ledgers may outlast the master's 60 s of silence.
locust.runners.HEARTBEAT_LIVENESS = 30
locust.runners.MASTER_HEARTBEAT_TIMEOUT = 300


@dataclass
class Run:
    """This process's view of the run: the plan, the estate, and the devices it plays."""

    folder: Path
    plan: RunPlan
    scenario: Scenario
    estate: Estate
    passwords: dict[str, str]
    by_type: dict[DeviceType, list[Device]]
    fleet: Fleet
    links: list[DeviceLink] = field(default_factory=list)
    ledger: Ledger | None = None
    started: float = 0.0  # wall clock at this process's test start
    finishing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, folder: Path) -> "Run":
        plan = RunPlan.read(folder)
        scenario = SCENARIOS[plan.scenario].scaled(plan.duration_s)
        estate = load_estate(plan.estate_file)
        by_type: dict[DeviceType, list[Device]] = {t: [] for t in DeviceType}
        for d in estate.devices:
            if d.id != plan.probe_device:
                by_type[d.type].append(d)
        passwords = json.loads(plan.device_credentials.read_text())
        return cls(folder, plan, scenario, estate, passwords, by_type, Fleet.for_estate(plan.seed))

    def elapsed_s(self) -> float:
        return time.time() - self.started if self.started else 0.0

    def link(self, device: Device, on_ack: Callable[[Acked], None]) -> DeviceLink:
        site = self.estate.site.id
        username = device_username(site, device.id)
        password = self.passwords.get(username)
        if password is None:
            raise LookupError(f"no broker password for {username} in {self.plan.device_credentials}")
        link = DeviceLink(device, site, self.plan.mqtt_host, self.plan.mqtt_port, username, password, on_ack)
        with self.lock:
            self.links.append(link)
        return link

    def behaviour(self, device: Device) -> Behaviour:
        behaviour = behaviour_for(device, self.estate, self.plan.seed, self.fleet)
        # The scenario's hour of the day, with timestamps of now.
        behaviour.rhythm_shift_ms = _shift_to_hour(self.estate, self.scenario.hour)
        return behaviour

    def finish(self) -> None:
        """Wait (bounded) for the last acknowledgements, leave, and write this process's ledger.

        Once: Locust fires test_stop again on quit, possibly while the first call still waits."""
        if self.finishing or not self.links:
            return
        self.finishing = True
        deadline = time.monotonic() + FLUSH_S
        while time.monotonic() < deadline and any(link.outstanding() for link in self.links):
            time.sleep(0.1)
        closing = [threading.Thread(target=link.close) for link in self.links]
        for t in closing:
            t.start()
        for t in closing:
            t.join()
        ledger = Ledger(self.estate.site.id, started=self.started, ended=time.time())
        ledger.devices = {link.device.id: link.record for link in self.links}
        path = ledger.write(self.folder)
        acked = sum(len(link.record.acked) for link in self.links)
        log.info("ledger %s: %d devices, %d readings acknowledged", path.name, len(self.links), acked)
        self.links = []


def _shift_to_hour(estate: Estate, hour: float) -> int:
    """Milliseconds to add to now to land on ``hour`` (today or tomorrow) in the estate's time zone."""
    now = dt.datetime.now(estate.site.tz)
    target = now.replace(hour=int(hour), minute=int(hour % 1 * 60), second=0, microsecond=0)
    if target < now:
        target += dt.timedelta(days=1)
    return int((target - now).total_seconds() * 1000)


RUN: Run | None = None


def run() -> Run:
    if RUN is None:
        raise RuntimeError("the run folder is not loaded (start Locust with --ew-run-dir)")
    return RUN


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--ew-run-dir",
        env_var="ESTATEWATCH_LOAD_RUN_DIR",
        default="",
        help="EstateWatch run folder holding plan.json (written by 'estatewatch load run')",
    )


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    global RUN
    options = environment.parsed_options
    folder = Path(options.ew_run_dir) if options is not None and options.ew_run_dir else None
    if folder is None:
        raise SystemExit("EstateWatch load: --ew-run-dir (or ESTATEWATCH_LOAD_RUN_DIR) is required")
    RUN = Run.load(folder)
    counts = {cls.device_type: len(RUN.by_type[cls.device_type]) for cls in DEVICE_USERS}
    for cls in DEVICE_USERS:
        cls.fixed_count = counts[cls.device_type]
    ProbeUser.fixed_count = 1 if RUN.plan.probe_device else 0
    with_api = RUN.plan.api_url is not None
    EngineerUser.fixed_count = RUN.plan.engineers if with_api and RUN.plan.engineer_token else 0
    GridWorkerUser.fixed_count = len(RUN.plan.grid_tokens) if with_api else 0
    # Classes with nothing to play are left out (Locust would give them weighted users otherwise).
    environment.user_classes[:] = [c for c in environment.user_classes if c.fixed_count > 0]
    if with_api:
        environment.host = RUN.plan.api_url


@events.test_start.add_listener
def _started(environment: Environment, **_: Any) -> None:
    run().started = time.time()


@events.test_stop.add_listener
def _stopped(environment: Environment, **_: Any) -> None:
    run().finish()


class DeviceUser(User):
    """One device of the estate: claims the next unplayed device of its type and lives its day."""

    abstract = True
    device_type: ClassVar[DeviceType]

    def on_start(self) -> None:
        r = run()
        devices = r.by_type[self.device_type]
        index = claim(r.folder / "claims", self.device_type.value)
        if index >= len(devices):
            raise LookupError(f"more {self.device_type.value} users than devices ({len(devices)})")
        device = devices[index]
        self.clock = DeviceClock(r.behaviour(device), lambda: r.scenario.multiplier(device.type, r.elapsed_s()))
        self.link = r.link(device, self._acked)
        self.link.start()

    def _acked(self, ack: Acked) -> None:
        self.environment.events.request.fire(
            request_type="MQTT",
            name=ack.name,
            response_time=ack.latency_ms,
            response_length=ack.size,
            exception=RuntimeError(ack.refused) if ack.refused else None,
            context={},
        )

    @task
    def live(self) -> None:
        r = run()
        self.clock.start(_now_ms())
        while True:
            now = _now_ms()
            self.clock.retime(now)
            for channel, objs in self.clock.due(now).items():
                self.link.publish(channel, objs)
            wake_ms = self.clock.next_ms()
            change = r.scenario.next_change_s(r.elapsed_s())
            if change is not None:  # a step-up step: wake up for it (a little spread, not all at once)
                wake_ms = min(wake_ms, int((r.started + change) * 1000) + random.randrange(1000))
            time.sleep(max(0.0, (wake_ms - _now_ms()) / 1000))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _device_user(device_type: DeviceType) -> type[DeviceUser]:
    name = "".join(part.title() for part in device_type.value.split("_")) + "User"
    return type(name, (DeviceUser,), {"abstract": False, "device_type": device_type, "__module__": __name__})


DEVICE_USERS = [_device_user(t) for t in DeviceType]
globals().update({cls.__name__: cls for cls in DEVICE_USERS})  # Locust finds user classes by module name


class ProbeUser(User):
    """One more device whose every reading is timed from publish until InfluxDB answers with it."""

    fixed_count = 0

    def on_start(self) -> None:
        r = run()
        device = next(d for d in r.estate.devices if d.id == r.plan.probe_device)
        self.behaviour = r.behaviour(device)
        self.link = r.link(device, lambda ack: None)
        self.link.start()
        self.http = requests.Session()
        self.samples = (r.folder / f"probe-{os.getpid()}.jsonl").open("a", encoding="utf-8")
        self.measurement = device.type.value
        self.device_id = device.id

    def on_stop(self) -> None:
        self.samples.close()

    @task
    def probe(self) -> None:
        r = run()
        if not self.link.connected.wait(timeout=r.plan.probe_interval_s):
            return  # broker away (the storm): a probe now would time the outage, not the pipeline
        started, at = time.perf_counter(), time.time()
        now = _now_ms()
        objs = [obj for _, _, obj in self.behaviour.telemetry(now)]
        self.link.publish(Channel.TELEMETRY, objs)
        seq = self.link.seq
        # Nanosecond integers: InfluxDB 1.6 reads "1796141204669ms" through a float (256 ns steps), and
        # ingest keeps the seq in the sub-millisecond digits: the reading is within its millisecond.
        q = (
            f'SELECT "seq" FROM "{self.measurement}" WHERE "device_id" = \'{self.device_id}\' '
            f'AND "seq" = {seq} AND time >= {now * 1_000_000} AND time < {(now + 1) * 1_000_000}'
        )
        latency: float | None = None
        deadline = started + r.plan.probe_timeout_s
        while time.perf_counter() < deadline:
            try:
                res = self.http.get(
                    f"{r.plan.influx_url}/query", params={"db": r.plan.influx_database, "q": q}, timeout=5
                )
                found = res.ok and "series" in res.json()["results"][0]
            except (requests.RequestException, ValueError, KeyError, IndexError):
                found = False
            if found:
                latency = (time.perf_counter() - started) * 1000
                break
            time.sleep(0.02)
        self.samples.write(json.dumps({"t": round(at, 3), "latency_ms": latency}) + "\n")
        self.samples.flush()
        self.environment.events.request.fire(
            request_type=PROBE[0],
            name=PROBE[1],
            response_time=latency if latency is not None else r.plan.probe_timeout_s * 1000,
            response_length=0,
            exception=None if latency is not None else TimeoutError(f"not queryable in {r.plan.probe_timeout_s} s"),
            context={},
        )
        time.sleep(max(0.0, r.plan.probe_interval_s - (time.perf_counter() - started)))


class _ApiUser(HttpUser):
    abstract = True
    token = ""

    def get(self, path: str, name: str, **params: Any) -> None:
        self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.token}"}, name=name)


class EngineerUser(_ApiUser):
    """A property engineer at Grafana's side: charging load, a building's circuits, its smoke sensors."""

    fixed_count = 0
    wait_time = between(5, 15)

    def on_start(self) -> None:
        r = run()
        self.token = r.plan.engineer_token or ""
        self.site = r.estate.site.id
        self.buildings = [b.id for b in r.estate.buildings]

    @task(2)
    def building_circuits(self) -> None:
        start = _now_ms() - 6 * 3_600_000
        self.get("/api/v1/telemetry/range", "range: a building's circuits, 6 h", site=self.site, type="power_meter",
                 field="power_w", agg="mean", interval="5m", start_ms=start, building=random.choice(self.buildings),
                 group_by="device")  # fmt: skip

    @task(1)
    def charging_by_building(self) -> None:
        start = _now_ms() - 86_400_000
        self.get("/api/v1/telemetry/range", "range: charging per building, 24 h", site=self.site, type="ev_charger",
                 field="power_w", agg="sum", interval="15m", start_ms=start, group_by="building")  # fmt: skip

    @task(2)
    def smoke_sensors(self) -> None:
        self.get("/api/v1/telemetry/latest", "latest: a building's smoke sensors", site=self.site,
                 type="smoke_sensor", building=random.choice(self.buildings))  # fmt: skip


class GridWorkerUser(_ApiUser):
    """A grid worker's phone: polls the open alerts of their grid."""

    fixed_count = 0
    wait_time = between(8, 12)

    def on_start(self) -> None:
        r = run()
        grids = sorted(r.plan.grid_tokens)
        self.grid = grids[claim(r.folder / "claims", "grid_worker") % len(grids)]
        self.token = r.plan.grid_tokens[self.grid]

    @task
    def open_alerts(self) -> None:
        self.get("/api/v1/alerts", "alerts: my grid's open ones", state="open", grid=self.grid, limit=50)


class ScenarioShape(LoadTestShape):
    """Every user at once (at the plan's spawn rate), held for the scenario's duration."""

    def tick(self) -> tuple[int, float] | None:
        r = run()
        if self.get_run_time() >= r.scenario.duration_s:
            return None
        if r.scenario.steps and self._far_behind():
            log.warning("step-up: the probe is over %d s behind; ending the run", GIVE_UP_MS // 1000)
            return None
        users = sum(len(v) for v in r.by_type.values()) + (1 if r.plan.probe_device else 0)
        if r.plan.api_url:
            users += (r.plan.engineers if r.plan.engineer_token else 0) + len(r.plan.grid_tokens)
        return users, r.plan.spawn_rate

    def _far_behind(self) -> bool:
        entry = self.runner.stats.entries.get((PROBE[1], PROBE[0])) if self.runner else None
        if entry is None:
            return False
        median = entry.get_current_response_time_percentile(0.5)
        return median is not None and median > GIVE_UP_MS
