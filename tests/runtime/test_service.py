"""The one service runtime: a failed task stops the service and ``serve()`` exits 1 naming it; a
periodic job survives the failures it names and only those; SIGTERM drains within the deadline."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.service import BACKOFF_MAX_S, Service, TaskFailedError, next_wait, serve

log = logging.getLogger("test.runtime")


class FlakyError(Exception):
    """What the periodic job in these tests says it survives."""


class Probe(Service):
    """A service with one periodic job and one long task, to watch the runtime from outside."""

    def __init__(
        self, job: Callable[[], Awaitable[None]], *, drain_s: float = 5.0, give_up_after: int | None = 10
    ) -> None:
        super().__init__("probe", log, drain_s)
        self.job = job
        self.give_up_after = give_up_after
        self.drained = False

    async def open(self) -> None:
        self.every("job", 0.01, self.job, retry=(FlakyError,), give_up_after=self.give_up_after)
        self.task("idle", asyncio.Event().wait())

    async def drain(self) -> None:
        self.drained = True


def failing(errors: list[BaseException]) -> Callable[[], Awaitable[None]]:
    """A job that raises each of ``errors`` in turn, then succeeds every time."""
    calls = iter(errors)

    async def job() -> None:
        error = next(calls, None)
        if error is not None:
            raise error

    return job


async def run_for(svc: Probe, seconds: float) -> None:
    async with svc:
        try:
            await asyncio.wait_for(svc.wait(), seconds)
        except TimeoutError:
            svc.stop()


async def test_a_named_transient_failure_is_retried_and_the_service_keeps_running() -> None:
    svc = Probe(failing([FlakyError("registry locked")] * 3))
    await run_for(svc, 0.5)
    assert svc.failed is None and svc.drained


async def test_an_unnamed_failure_of_a_periodic_job_stops_the_service_at_once() -> None:
    svc = Probe(failing([KeyError("a bug")]))
    await run_for(svc, 5)
    assert isinstance(svc.failed, TaskFailedError)
    assert svc.failed.task == "job" and isinstance(svc.failed.error, KeyError)
    assert not svc.drained, "a crash does not wait for a drain: what was taken is redelivered"


async def test_a_transient_failure_that_lasts_is_fatal() -> None:
    svc = Probe(failing([FlakyError("gone")] * 50), give_up_after=4)
    await run_for(svc, 10)
    assert svc.failed is not None and isinstance(svc.failed.error, FlakyError)


async def test_a_job_told_never_to_give_up_outlasts_any_run_of_named_failures() -> None:
    """The boards' writers: InfluxDB away for long must not stop the rules service's alerts."""
    calls = 0
    recovered = asyncio.Event()
    job = failing([FlakyError("influxdb away")] * 40)

    async def counted() -> None:
        nonlocal calls
        calls += 1
        await job()
        if calls > 45:
            recovered.set()

    svc = Probe(counted, give_up_after=None)
    async with svc:
        waits = [asyncio.ensure_future(recovered.wait()), asyncio.ensure_future(svc.wait())]
        await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        svc.stop()
    assert svc.failed is None and recovered.is_set(), (calls, svc.failed)


async def test_a_task_that_returns_while_the_service_runs_is_a_failure() -> None:
    class Returns(Probe):
        async def open(self) -> None:
            async def done() -> None:
                return None

            self.task("short", done())

    svc = Returns(failing([]))
    await run_for(svc, 5)
    assert svc.failed is not None and svc.failed.task == "short"


async def test_a_drain_that_hangs_is_cut_at_the_deadline() -> None:
    class Hangs(Probe):
        async def drain(self) -> None:
            await asyncio.Event().wait()

    svc = Hangs(failing([]), drain_s=0.3)
    started = time.monotonic()
    await run_for(svc, 0.1)
    assert time.monotonic() - started < 3


async def test_an_error_while_opening_is_the_callers_own_not_an_exception_group() -> None:
    class Refused(Probe):
        async def open(self) -> None:
            self.task("idle", asyncio.Event().wait())
            raise ConnectionError("the broker refused the connection")

    with pytest.raises(ConnectionError, match="refused"):
        async with Refused(failing([])):
            pass


def test_serve_exits_1_when_a_task_failed(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(lambda: Probe(failing([KeyError("a bug")]))) == 1
    assert "stopped because task job failed: KeyError('a bug')" in capsys.readouterr().err


SCRIPT = """
import asyncio, logging, sys
sys.path.insert(0, {root!r})
from runtime.service import Service, serve

class Slow(Service):
    async def open(self):
        self.task("idle", self.idle())

    async def idle(self):  # a task's first step runs once serve() is waiting: the handlers are in place
        print("running", flush=True)
        await asyncio.Event().wait()

    async def drain(self):
        await asyncio.sleep(0.2)
        print("drained", flush=True)

sys.exit(serve(lambda: Slow("slow", logging.getLogger("slow"), drain_s=5)))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_taking_input_drains_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(Path(__file__).parents[2]))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        os.kill(proc.pid, sig)
        assert proc.wait(15) == 0
        assert proc.stdout.read().strip() == "drained"
    finally:
        proc.kill()
        proc.wait()


@given(
    period=st.floats(0.01, 3600),
    now=st.floats(0, 4e9),
    failures=st.integers(0, 1000),
    aligned=st.booleans(),
    jitter=st.floats(0, 1, exclude_max=True),
)
def test_the_next_wait_is_never_longer_than_a_period_and_backs_off_within_its_cap(
    period: float, now: float, failures: int, aligned: bool, jitter: float
) -> None:
    wait = next_wait(period, now, failures, aligned, jitter)
    assert 0 <= wait <= period * (1 + 1e-9)
    if failures:
        assert wait <= min(BACKOFF_MAX_S, 0.5 * 2 ** min(failures, 16))
    elif not aligned:
        assert wait == period
    else:  # the next run lands on a multiple of the period on the wall clock (to float precision)
        assert wait > 0
        off = (now + wait) % period
        assert min(off, period - off) <= 1e-6 * max(1.0, now) * 1e-3 + 1e-9
