"""``estatewatch load run``: a whole platform of its own, Locust against it, then the verdict.

For each scenario, in a fresh run folder under the results folder:
1. the estate (or the first N of its devices) plus a probe device, written as the run's estate;
2. a private stack: Mosquitto with a dynsec client per device, influxd, the registry, ingest, rules
   and the API (free ports; nothing shared with ``make up``);
3. Locust, headless, ``--processes`` workers, HTML and CSV reports; CPU and memory of every
   server sampled each second; the reconnect storm restarts the broker mid-run;
4. the wait for ingest to store what was acknowledged, then the verifier, the plots, a summary.
The run fails (exit 1) when an acknowledged reading is missing or stored twice.
"""

import asyncio
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.procstat import ProcessSampler, children_of
from devices.estate import Device, Estate, dump_estate, load_estate
from devices.types import DeviceType
from load.ledger import Ledger
from load.plan import RunPlan
from load.plots import plot_run
from load.report import Outcome, report_lines, summarize
from load.scenarios import SCENARIOS, Scenario
from load.settings import LoadSettings
from load.verify import Verdict, verify
from runtime.service import sigterm_as_interrupt
from stack.local import LocalStack
from stack.procs import StackError, free_port, free_port_pair
from stack.supervise import STOP_MARGIN_S, Child, prepare_registry, start_services, stop_children
from store.influx import Influx, quote_literal
from store.registry.db import Registry
from store.tokens import Role, TokenStore

Say = Callable[[str], None]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PROBE_ID = "load-probe"
WORKERS_EXIT_S = 180.0  # the workers' last PUBACKs (15 s), leaving, and writing ledgers


class LoadError(RuntimeError):
    """The load run could not be carried out; the message says why."""


def load_estate_for_run(settings: LoadSettings) -> Estate:
    """The estate to play: all of it, or ``load_devices`` of it spread over the types, plus the probe."""
    estate = load_estate(settings.estate_file)
    devices = estate.devices
    if settings.load_devices is not None and settings.load_devices < len(devices):
        by_type: dict[DeviceType, list[Device]] = {}
        for d in devices:
            by_type.setdefault(d.type, []).append(d)
        picked: list[Device] = []
        while len(picked) < settings.load_devices:  # round robin: every type present
            for group in by_type.values():
                if group and len(picked) < settings.load_devices:
                    picked.append(group.pop(0))
        devices = picked
    probe = Device(id=PROBE_ID, type=DeviceType.POWER_METER, label="load test latency probe")
    return estate.model_copy(update={"devices": [*devices, probe]})


def _private(settings: LoadSettings, folder: Path, estate_file: Path) -> LoadSettings:
    influx_port = free_port_pair()
    return settings.model_copy(
        update={
            "run_dir": folder / "stack",
            "mqtt_url": f"mqtt://127.0.0.1:{free_port()}",
            "influx_url": f"http://127.0.0.1:{influx_port}",
            "influx_database": "estate",
            "db_url": f"sqlite+aiosqlite:///{folder / 'stack' / 'registry.db'}",
            "estate_file": estate_file,
        }
    )


async def _tokens(db_url: str, estate: Estate, engineers: int) -> tuple[str | None, dict[str, str]]:
    async with Registry(db_url) as registry:
        store = TokenStore(registry)
        engineer = (await store.create(Role.ENGINEER, "load: engineers"))[0] if engineers else None
        grids = {g.id: (await store.create(Role.GRID_WORKER, f"load: {g.id}", grids=[g.id]))[0] for g in estate.grids}
    return engineer, grids


def _wait_http(url: str, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise LoadError(f"{what} not ready at {url} after {timeout_s:.0f} s")


class LoadRun:
    def __init__(self, settings: LoadSettings, scenario: Scenario, say: Say) -> None:
        self.settings = settings
        self.scenario = scenario.scaled(settings.load_duration_s)
        self.say = say
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.folder = (settings.load_results_dir / f"{stamp}-{scenario.name}").resolve()
        self.events: dict[str, float] = {}

    # -- the platform ---------------------------------------------------------------------------
    def _prepare(self) -> tuple[LoadSettings, LocalStack, Estate]:
        self.folder.mkdir(parents=True, exist_ok=False)
        estate = load_estate_for_run(self.settings)
        estate_file = self.folder / "estate.yaml"
        estate_file.write_text(dump_estate(estate), encoding="utf-8")
        private = _private(self.settings, self.folder, estate_file)
        return private, LocalStack(private), estate

    def _services_env(self) -> dict[str, dict[str, str]]:
        self.ports = {"ingest": free_port(), "rules": free_port(), "api": free_port()}
        return {
            "ingest": {"ESTATEWATCH_INGEST_METRICS_PORT": str(self.ports["ingest"])},
            "rules": {"ESTATEWATCH_RULES_METRICS_PORT": str(self.ports["rules"])},
            "api": {"ESTATEWATCH_API_PORT": str(self.ports["api"])},
        }

    # -- the run --------------------------------------------------------------------------------
    def execute(self) -> Outcome:
        private, local, estate = self._prepare()
        self.say(f"== {self.scenario.name}: {self.scenario.summary}")
        devices = len(estate.devices) - 1
        self.say(f"   {devices:,} devices + probe, {self.scenario.duration_s:.0f} s; run folder {self.folder}")
        children: list[Child] = []
        try:
            for line in local.up():
                self.say(f"   {line}")
            if prepare_registry(local) != 0:
                raise LoadError("registry init failed (see above)")
            logs = local.root / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            env = self._services_env()
            children = start_services(local, logs, env)
            names = {c.name for c in children}
            _wait_http(f"http://127.0.0.1:{self.ports['ingest']}/healthz", "ingest")
            if "rules" in names:
                _wait_http(f"http://127.0.0.1:{self.ports['rules']}/healthz", "rules")
            api_url = None
            if "api" in names and self.settings.load_api:
                api_url = f"http://127.0.0.1:{self.ports['api']}"
                _wait_http(f"{api_url}/readyz", "api")
            engineer, grids = asyncio.run(_tokens(private.db_url, estate, self.settings.load_engineers))
            plan = RunPlan(
                scenario=self.scenario.name,
                duration_s=self.scenario.duration_s,
                estate_file=private.estate_file,
                device_credentials=local.device_credentials_file,
                mqtt_host=private.mqtt.host,
                mqtt_port=private.mqtt.port,
                influx_url=private.influx_url,
                influx_database=private.influx_database,
                api_url=api_url,
                engineer_token=engineer if api_url else None,
                grid_tokens=grids if api_url else {},
                engineers=self.settings.load_engineers,
                probe_device=PROBE_ID,
                spawn_rate=self.settings.load_spawn_rate,
            )
            plan.write(self.folder)
            self.say(f"   platform ready: {', '.join(sorted(names))}; starting Locust")
            code = self._locust(local, children)
            verdict = self._settle_and_verify(private)
        finally:
            stop_children(children, lambda line: None, self.settings.drain_s + STOP_MARGIN_S)
            local.down()
        outcome = Outcome(self.scenario.name, self.folder, verdict, code)
        outcome.stats = summarize(self.folder, self.events, self.scenario)
        (self.folder / "verify.json").write_text(
            json.dumps({"verdict": verdict.to_json(), "stats": outcome.stats, "events": self.events}, indent=1)
        )
        try:
            for png in plot_run(self.folder):
                self.say(f"   plot {png}")
        except (OSError, ValueError, KeyError) as exc:  # the verdict stands without its picture
            self.say(f"   no plot: {exc}")
        self.say(report_lines(outcome))
        return outcome

    def _locust(self, local: LocalStack, services: list[Child]) -> int:
        argv = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "--ew-run-dir", str(self.folder), "--csv", str(self.folder / "locust"), "--csv-full-history",
            "--html", str(self.folder / "report.html"), "--logfile", str(self.folder / "locust.log"),
            "--loglevel", "INFO", "--exit-code-on-error", "0",
        ]  # fmt: skip
        if self.settings.load_processes > 1:
            argv += ["--processes", str(self.settings.load_processes)]
        mq = local.mosquitto().server()
        ifx = local.influx().server()
        with (self.folder / "locust.out").open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

            def pids() -> dict[str, list[int]]:
                found = {"mosquitto": [mq.pid() or 0], "influxd": [ifx.pid() or 0]}
                for c in services:
                    found[c.name] = [c.proc.pid]
                found["locust"] = [proc.pid, *children_of(proc.pid)]
                return found

            with ProcessSampler(self.folder / "procstat.csv", pids):
                try:
                    self._watch(proc, local)
                except BaseException:
                    # Its own session (so a terminal's Ctrl-C reaches us, not it): stop it ourselves.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired, LoadError):
                        proc.wait(10)  # reaped, or the group would never look empty
                        _wait_group(proc.pid, 10)
                    raise
                # The master exits before its workers have written their ledgers: wait for the group.
                _wait_group(proc.pid, WORKERS_EXIT_S)
        if proc.returncode not in (0, 1):
            tail = (self.folder / "locust.out").read_text(errors="replace").splitlines()[-15:]
            raise LoadError(f"Locust exited with {proc.returncode}:\n" + "\n".join(tail))
        return proc.returncode

    def _watch(self, proc: subprocess.Popen[bytes], local: LocalStack) -> None:
        """Progress every 10 s; the storm's broker restart at its time."""
        history = self.folder / "locust_stats_history.csv"
        started: float | None = None
        next_report = time.monotonic() + 10
        storm: threading.Thread | None = None
        failed: list[BaseException] = []

        def restart() -> None:
            try:
                self._storm(local)
            except LoadError as exc:
                failed.append(exc)

        while proc.poll() is None:
            time.sleep(0.5)
            if started is None:
                started = _first_timestamp(history)
                if started is not None:
                    self.events["test_start"] = started
            due = started is not None and time.time() >= started + (self.scenario.storm_at_s or 0)
            if self.scenario.storm_at_s is not None and storm is None and due:
                # Beside the progress reports, which go on through the outage.
                storm = threading.Thread(target=restart, name="storm", daemon=True)
                storm.start()
            if time.monotonic() >= next_report:
                next_report += 10
                self.say("   " + _progress(history, started))
        proc.wait()
        if storm is not None:
            storm.join()
        if failed:
            raise failed[0]

    def _storm(self, local: LocalStack) -> None:
        mq = local.mosquitto()
        self.say(f"   storm: stopping the broker for {self.scenario.outage_s:.0f} s")
        self.events["broker_stop"] = time.time()
        mq.server().stop()
        time.sleep(self.scenario.outage_s)
        starting = time.time()  # devices may connect before start() has seen the port open
        try:
            mq.start()
        except StackError as exc:
            raise LoadError(f"the broker did not come back after the storm's restart: {exc}") from exc
        self.events["broker_start"] = starting
        self.say("   storm: broker back; devices reconnecting with their backlogs")

    def _settle_and_verify(self, private: LoadSettings) -> Verdict:
        ledger = Ledger.read(self.folder)
        acked = sum(len(r.acked) for r in ledger.devices.values())
        self.say(f"   Locust done: {len(ledger.devices):,} devices, {acked:,} readings acknowledged")
        self.say("   waiting for ingest to store them")
        deadline = time.monotonic() + self.settings.load_drain_s
        last, still = -1, 0
        site = ledger.site
        next_report = time.monotonic() + 10
        while time.monotonic() < deadline:
            stored = asyncio.run(_stored_count(private, site, ledger.started - 120))
            if stored >= acked:
                break
            still = still + 1 if stored == last else 0
            if still >= 20:  # nothing new for 10 s: whatever is missing is not coming
                break
            last = stored
            if time.monotonic() >= next_report:  # a backlog after a step-up takes minutes
                next_report += 10
                self.say(f"   stored {stored:,} of {acked:,}")
            time.sleep(0.5)
        self.events["verified"] = time.time()
        self.say("   verifying every acknowledged seq in InfluxDB")
        return asyncio.run(
            verify(self.folder, private.influx_url, private.influx_database, lambda line: self.say(f"   {line}"))
        )


async def _stored_count(private: LoadSettings, site: str, since_s: float) -> int:
    async with Influx(private.influx_url, private.influx_database) as influx:
        q = (f'SELECT count("seq") FROM /.*/ WHERE "site" = {quote_literal(site)} '
             f"AND time >= {int(since_s * 1000)}ms")  # fmt: skip
        total = 0
        for series in (await influx.query(q))[0]:
            if series.values and series.values[0][1] is not None:
                total += int(series.values[0][1])
        return total


def _wait_group(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    raise LoadError(f"Locust workers still running {timeout_s:.0f} s after the master ended; killed")


def _first_timestamp(history: Path) -> float | None:
    try:
        with history.open() as f:
            next(f)
            row = next(csv.reader(f), None)
    except (OSError, StopIteration):
        return None
    return float(row[0]) if row else None


def _progress(history: Path, started: float | None) -> str:
    rows = _last_rows(history)
    if not rows:
        return "starting Locust..."
    users = rows.get("Aggregated", {}).get("User Count", "?")
    mqtt = sum(float(r["Requests/s"]) for n, r in rows.items() if r["Type"] == "MQTT")
    fails = sum(float(r["Failures/s"]) for r in rows.values() if r["Type"] != "")
    probe = rows.get("publish-to-queryable", {})
    elapsed = f"{time.time() - started:4.0f} s" if started else "   -"
    return (f"{elapsed}: {users} users, {mqtt:,.0f} msg/s acknowledged, {fails:.1f} failures/s, probe p50 "
            f"{probe.get('50%', '-')} ms p99 {probe.get('99%', '-')} ms")  # fmt: skip


def _last_rows(history: Path) -> dict[str, dict[str, str]]:
    """The newest row of each entry (Locust may be mid-way through writing a second's rows)."""
    try:
        with history.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("Requests/s") not in (None, "")]
    except OSError:
        return {}
    newest = {r["Name"]: r for r in rows}
    # Entries that went quiet (the storm's outage) would show their last busy second: keep the recent.
    latest = max((int(r["Timestamp"]) for r in rows), default=0)
    return {n: r for n, r in newest.items() if int(r["Timestamp"]) >= latest - 2}


def run_scenarios(settings: LoadSettings, names: list[str], say: Say) -> list[Outcome]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise LoadError(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    _check_open_files(settings)
    with sigterm_as_interrupt():  # SIGTERM stops a run as Ctrl-C does: Locust, services and stack too
        return [LoadRun(settings, SCENARIOS[name], say).execute() for name in names]


def _check_open_files(settings: LoadSettings) -> None:
    """Each device is a socket in Locust and one in Mosquitto: both inherit this process's limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    devices = settings.load_devices or len(load_estate(settings.estate_file).devices)
    need = devices + 2000
    if soft < need:
        raised = min(hard, max(need, 20_000)) if hard != resource.RLIM_INFINITY else max(need, 20_000)
        if raised < need:
            raise LoadError(f"{devices:,} devices need ~{need:,} open files; the hard limit is {hard:,} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
