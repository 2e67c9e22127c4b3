"""``make up``: the whole platform in the foreground, stopped cleanly with Ctrl-C."""

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.service import sigterm_as_interrupt
from runtime.settings import Settings
from stack.local import LocalStack

# Platform services in start order: (name, broker user, module that must exist, extra args).
SERVICES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("ingest", "ingest", "ingest.service", ()),
    ("rules", "rules", "rules.service", ("run",)),
    ("api", "api", "api.app", ()),
)
# A service drains within drain_s; past this much more it is killed (what it held is redelivered).
STOP_MARGIN_S = 10.0


def available_services() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The services whose module is installed (later issues add rules and api)."""
    found = []
    for service in SERVICES:
        try:
            present = importlib.util.find_spec(service[2]) is not None
        except ModuleNotFoundError:  # its package does not exist yet
            present = False
        if present:
            found.append(service)
    return found


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_child(name: str, args: list[str], env: dict[str, str], logs: Path, echo: bool = False) -> Child:
    """``python -m estatewatch ARGS`` in its own session, its output in ``logs/NAME.log`` (or the terminal)."""
    log = logs / f"{name}.log"
    out = None if echo else log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "estatewatch", *args],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )
    return Child(name, proc, log)


def stop_children(children: list[Child], say: Callable[[str], None], deadline_s: float) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    for child in reversed(children):
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
        say(f"stopped {child.name} (exit {child.proc.returncode})")


async def _still_valid(db_url: str, token: str) -> bool:
    """The first admin token expires like any other (and a new registry does not know it): make another."""
    from store.registry.db import Registry
    from store.tokens import TokenExpiredError, TokenStore

    async with Registry(db_url) as reg:
        try:
            return await TokenStore(reg).verify(token) is not None
        except TokenExpiredError:
            return False


def prepare_registry(local: LocalStack) -> int:
    """The estate and its devices' broker usernames in the registry, and a first admin token; an exit code."""
    env = {**os.environ, **local.service_env("api")}
    init = subprocess.run(
        # --upgrade: a registry an earlier release made is migrated first (docs/registry.md).
        [sys.executable, "-m", "estatewatch", "registry", "init", "--upgrade",
         "--device-credentials", str(local.device_credentials_file)],
        env=env, check=False,
    )  # fmt: skip
    if init.returncode != 0:
        return init.returncode
    token_file = local.root / "admin.token"
    if token_file.exists() and asyncio.run(_still_valid(local.settings.db_url, token_file.read_text().strip())):
        return 0
    made = subprocess.run(
        [sys.executable, "-m", "estatewatch", "tokens", "create", "--role", "admin",
         "--name", "first admin (make up)", "--out", str(token_file)],
        env=env, check=False, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return made.returncode


def start_services(local: LocalStack, logs: Path, env: dict[str, dict[str, str]] | None = None) -> list[Child]:
    """Every available platform service against ``local``; ``env`` adds settings per service name."""
    children = []
    for name, user, _, args in available_services():
        extra = (env or {}).get(name, {})
        children.append(start_child(name, [name, *args], {**local.service_env(user), **extra}, logs))
    return children


def run_everything(
    settings: Settings, *, simulate: bool, sim_args: list[str], device_credentials: bool = True
) -> int:
    local = LocalStack(settings, make_device_credentials=device_credentials)
    for line in local.up():
        print(line, flush=True)
    logs = local.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    with sigterm_as_interrupt():
        return _run(local, settings, logs, children, simulate, sim_args)


def _run(
    local: LocalStack, settings: Settings, logs: Path, children: list[Child], simulate: bool, sim_args: list[str]
) -> int:
    try:
        prepared = prepare_registry(local)
        if prepared != 0:
            return prepared
        token_file = local.root / "admin.token"
        children += start_services(local, logs)
        for child in children:
            print(f"{child.name:10} pid {child.proc.pid:<7} started (log {child.log})", flush=True)
        if simulate:
            # Each device as itself, with the broker client the stack made for it (as a real one would).
            own = ["--device-credentials", str(local.device_credentials_file)] if local.device_credentials() else []
            children.append(
                start_child("simulator", ["simulate", *own, *sim_args], local.service_env("simulator"), logs, echo=True)
            )
        api = f"http://127.0.0.1:{os.environ.get('ESTATEWATCH_API_PORT', '8080')}"
        print(
            f"\nmosquitto  {settings.mqtt.host}:{settings.mqtt.port}   credentials: {local.credentials_file}"
            f"\ninfluxdb   {settings.influx_url}   database: {settings.influx_database}"
            f"\nregistry   {settings.db_url}"
            f"\napi        {api}/api/v1/docs   grid workers' page: {api}/page"
            f"\n           admin token (keep it secret): {token_file}"
            f"\nservice environment: estatewatch stack status --env ingest"
            f"\nCtrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for child in children:
                exited = child.proc.poll()
                if exited is not None:
                    where = "" if child.name == "simulator" else f"; see {child.log}"
                    print(f"{child.name} exited with {exited}{where}", flush=True)
                    return exited
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            stop_children(children, lambda line: print(line, flush=True), settings.drain_s + STOP_MARGIN_S)
            for line in local.down():
                print(line, flush=True)
