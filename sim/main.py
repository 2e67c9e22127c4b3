"""Run the simulator in one or several processes, with a progress line while it runs."""

import asyncio
import contextlib
import datetime as dt
import logging
import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from devices.estate import Device, Estate, load_estate
from runtime.service import Service, serve, sigterm_as_interrupt
from sim.runner import SimError, SimOptions, Simulator

log = logging.getLogger("estatewatch.sim")


def _line(snap: dict[str, Any], rate: float, sim_ms: int, tz: Any) -> str:
    clock = dt.datetime.fromtimestamp(sim_ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
    return (
        f"sim: {snap['connected']}/{snap['devices']} connected · {rate:,.1f} msg/s · "
        f"sent {snap['messages']:,} ({snap['readings']:,} readings) + {snap['statuses']:,} status, "
        f"{snap['acked']:,} acked · "
        f"reconnects {snap['reconnects']} · estate clock {clock}"
    )


class SimService(Service):
    """The simulator under ``runtime.serve()``, as ingest and rules run: a publishing task and a
    progress line; SIGTERM stops publishing, then waits (``drain_s``) for the broker's PUBACKs."""

    def __init__(
        self,
        estate: Estate,
        devices: list[Device],
        options: SimOptions,
        report: Callable[[dict[str, Any], int], None],
        every_s: float,
    ) -> None:
        super().__init__("sim", log, options.drain_s)
        self.estate, self.devices, self.options = estate, devices, options
        self.report, self.every_s = report, every_s
        self.sim: Simulator | None = None
        self._published = asyncio.Event()
        self._incidents_told = 0

    async def open(self) -> None:
        self.sim = await self.stack.enter_async_context(Simulator(self.estate, self.devices, self.options))
        self.task("publish", self._publish(self.sim))
        self.every("progress", self.every_s, self.tell)

    async def _publish(self, sim: Simulator) -> None:
        try:
            await sim.run()
        finally:
            self._published.set()
        self.stop()  # the duration is over: a stop, not a failure

    async def drain(self) -> None:
        assert self.sim is not None
        self.sim.stop()
        await self._published.wait()
        await self.sim.flush(self.drain_s)

    async def tell(self) -> None:
        """Incidents injected since the last line, then the totals."""
        if self.sim is None:
            return
        for text in self.sim.injected[self._incidents_told :]:
            self.report({"incident": text}, self.sim.now_ms())
        self._incidents_told = len(self.sim.injected)
        self.report(self.sim.stats.snapshot(), self.sim.now_ms())


def run_in_process(
    estate: Estate,
    devices: list[Device],
    options: SimOptions,
    report: Callable[[dict[str, Any], int], None],
    every_s: float,
) -> int:
    """One process's share, until done or SIGTERM; ``report`` gets a stats snapshot and the estate
    clock every ``every_s`` and at the end. 0 when it ended as asked, 1 when a task failed."""
    svc = SimService(estate, devices, options, report, every_s)
    code = serve(lambda: svc)
    asyncio.run(svc.tell())
    return code


def _child(
    estate_file: Path,
    index: int,
    ids: list[str],
    options: SimOptions,
    out: "mp.Queue[tuple[int, dict[str, Any], int]]",
    every_s: float,
) -> None:
    estate = load_estate(estate_file)
    wanted = set(ids)
    devices = [d for d in estate.devices if d.id in wanted]
    record = options.record.with_suffix(f".{index}{options.record.suffix}") if options.record else None

    def report(snap: dict[str, Any], now: int) -> None:
        out.put((index, snap, now))

    sys.exit(run_in_process(estate, devices, replace(options, record=record), report, every_s))


def simulate(
    estate_file: Path,
    devices: list[Device],
    options: SimOptions,
    *,
    processes: int = 1,
    every_s: float = 5.0,
    stream: TextIO = sys.stderr,
) -> dict[str, Any]:
    """Run until done; prints progress to ``stream``; returns the final totals over all processes."""
    estate = load_estate(estate_file)
    tz = estate.site.tz
    last: dict[int, dict[str, Any]] = {}
    prev = (time.monotonic(), 0)

    def show(index: int, snap: dict[str, Any], now_ms: int) -> None:
        nonlocal prev
        if "incident" in snap:
            print(f"sim: incident: {snap['incident']}", file=stream, flush=True)
            return
        last[index] = snap
        total = {k: sum(s[k] for s in last.values()) for k in snap}
        t = time.monotonic()
        rate = (total["messages"] - prev[1]) / max(t - prev[0], 1e-3)
        prev = (t, total["messages"])
        print(_line(total, rate, now_ms, tz), file=stream, flush=True)

    if processes <= 1:
        if run_in_process(estate, devices, options, lambda s, n: show(0, s, n), every_s):
            raise SimError("the simulator stopped because a task failed (above)")
    else:
        ctx = mp.get_context("spawn")
        out: mp.Queue[tuple[int, dict[str, Any], int]] = ctx.Queue()
        children = [
            ctx.Process(
                target=_child,
                name=f"sim-{i}",
                daemon=True,
                args=(estate_file, i, [d.id for d in devices[i::processes]], options, out, every_s),
            )
            for i in range(processes)
        ]
        for c in children:
            c.start()
        try:
            with sigterm_as_interrupt():  # a supervisor's SIGTERM stops the children too
                while any(c.is_alive() for c in children) or not out.empty():
                    with contextlib.suppress(queue.Empty):
                        show(*out.get(timeout=0.5))
        except KeyboardInterrupt:
            for c in children:
                c.terminate()  # SIGTERM: each child flushes and disconnects
            for c in children:
                c.join(30)
            while not out.empty():
                show(*out.get())
        failed = [c.name for c in children if c.exitcode != 0]
        if failed:
            raise SimError(f"simulator processes failed: {', '.join(failed)}")
    return {k: sum(s[k] for s in last.values()) for k in next(iter(last.values()), {})}
