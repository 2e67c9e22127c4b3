"""Run the simulator in one or several processes, with a progress line while it runs."""

import asyncio
import contextlib
import datetime as dt
import multiprocessing as mp
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from devices.estate import Device, Estate, load_estate
from sim.runner import SimOptions, Simulator, Stats


def _line(snap: dict[str, Any], rate: float, sim_ms: int, tz: Any) -> str:
    clock = dt.datetime.fromtimestamp(sim_ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
    return (
        f"sim: {snap['connected']}/{snap['devices']} connected · {rate:,.1f} msg/s · "
        f"sent {snap['messages']:,} ({snap['readings']:,} readings) + {snap['statuses']:,} status, "
        f"{snap['acked']:,} acked · "
        f"reconnects {snap['reconnects']} · estate clock {clock}"
    )


async def run_in_process(
    estate: Estate,
    devices: list[Device],
    options: SimOptions,
    report: Callable[[dict[str, Any], int], None],
    every_s: float,
) -> Stats:
    """One process's share; ``report`` gets a stats snapshot and the estate clock every ``every_s``."""
    loop = asyncio.get_running_loop()
    async with Simulator(estate, devices, options) as sim:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, sim.stop)
        for text in sim.injected:
            report({"incident": text}, sim.now_ms())

        async def progress() -> None:
            while True:
                await asyncio.sleep(every_s)
                report(sim.stats.snapshot(), sim.now_ms())

        ticker = asyncio.create_task(progress(), name="sim-progress")
        try:
            stats = await sim.run()
        finally:
            ticker.cancel()
        for text in sim.injected:
            report({"incident": text}, sim.now_ms())
    report(stats.snapshot(), sim.now_ms())
    return stats


def _child(
    estate_file: Path,
    index: int,
    ids: list[str],
    options: SimOptions,
    out: "mp.Queue[tuple[int, dict[str, Any], int]]",
    every_s: float,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (SIGTERM)
    estate = load_estate(estate_file)
    wanted = set(ids)
    devices = [d for d in estate.devices if d.id in wanted]
    record = options.record.with_suffix(f".{index}{options.record.suffix}") if options.record else None
    asyncio.run(
        run_in_process(
            estate, devices, replace(options, record=record), lambda snap, now: out.put((index, snap, now)), every_s
        )
    )


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
        asyncio.run(run_in_process(estate, devices, options, lambda s, n: show(0, s, n), every_s))
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
        failed = [c.name for c in children if c.exitcode not in (0, -signal.SIGTERM)]
        if failed:
            raise RuntimeError(f"simulator processes failed: {', '.join(failed)}")
    return {k: sum(s[k] for s in last.values()) for k in next(iter(last.values()), {})}
