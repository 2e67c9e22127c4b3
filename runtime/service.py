"""A service: an async context manager that opens its clients in ``__aenter__`` and owns one
TaskGroup of named tasks (aiomqtt's shape), and ``serve()``, which runs one until SIGTERM or Ctrl-C
(arq's shape: stop taking input, drain within a deadline, then cancel).

Any task that fails stops the service, and ``serve()`` exits 1 naming it, so a supervisor can tell a
crash from a stop. A periodic job says what it survives (``every(..., retry=...)``): the named
exceptions are logged and retried with backoff, and only a run of ``give_up_after`` failures in a
row is fatal; anything else is fatal at once.
"""

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

BACKOFF_MAX_S = 30.0


class TaskFailedError(RuntimeError):
    """A service's task failed; the service stopped because of it."""

    def __init__(self, task: str, error: BaseException) -> None:
        super().__init__(f"task {task} failed: {error!r}")
        self.task = task
        self.error = error


def next_wait(period_s: float, now_s: float, failures: int, aligned: bool, jitter: float) -> float:
    """Seconds until a periodic job's next run: a period (to the next multiple of it on the wall
    clock when ``aligned``), or after ``failures`` transient failures in a row, a jittered backoff
    (``jitter`` in [0, 1)) that grows with each but never waits longer than the period would."""
    wait = period_s - now_s % period_s if aligned else period_s
    if failures:
        wait = min(wait, jitter * min(BACKOFF_MAX_S, 0.5 * 2 ** min(failures, 16)))
    return wait


class Service:
    """Subclasses implement ``open()`` (clients through ``self.stack``, tasks through ``task`` and
    ``every``) and may implement ``drain()`` (finish what was taken; bounded by ``drain_s``) and
    ``problem()`` (None when healthy, for /healthz)."""

    def __init__(self, name: str, log: logging.Logger, drain_s: float) -> None:
        self.name = name
        self.log = log
        self.drain_s = drain_s
        self.accepting = True
        self.stack = AsyncExitStack()
        self.failed: TaskFailedError | None = None
        self._stopped = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None

    # -- what subclasses write -------------------------------------------------------------------
    async def open(self) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        """Finish what was taken (the deadline is the caller's)."""

    def problem(self) -> str | None:
        dead = [name for name, t in self._tasks.items() if t.done()]
        return f"task {dead[0]} has stopped" if dead else None

    # -- tasks -----------------------------------------------------------------------------------
    def task(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """A task that runs as long as the service; returning or raising stops the service."""
        assert self._group is not None, "tasks start in open()"
        task = self._group.create_task(self._guarded(name, job), name=f"{self.name}:{name}")
        task.add_done_callback(lambda _: job.close())  # cancelled before its first step: never awaited
        self._tasks[name] = task

    async def _guarded(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """The failure is kept (``failed``) and the service stopped; not raised into the TaskGroup,
        which would cancel whoever runs the service instead of letting it close in order."""
        try:
            await job
        except Exception as exc:  # any: whatever killed a task is the reason the service stops
            self._fail(name, exc)
            return
        if self.accepting:
            self._fail(name, RuntimeError("returned while the service runs"))

    def _fail(self, name: str, exc: BaseException) -> None:
        self.log.error("task %s failed; stopping", name, exc_info=exc)
        if self.failed is None:
            self.failed = TaskFailedError(name, exc)
        self.stop()

    def every(
        self,
        name: str,
        period_s: float,
        job: Callable[[], Awaitable[None]],
        *,
        retry: tuple[type[BaseException], ...] = (),
        give_up_after: int | None = 10,
        aligned: bool = False,
    ) -> None:
        """Run ``job`` every ``period_s`` (on the wall clock's multiples when ``aligned``).
        ``give_up_after=None``: the named exceptions are never fatal (a job whose failure costs
        only its own output, which must not stop the rest of the service)."""
        self.task(name, self._periodic(name, period_s, job, retry, give_up_after, aligned))

    async def _periodic(
        self,
        name: str,
        period_s: float,
        job: Callable[[], Awaitable[None]],
        retry: tuple[type[BaseException], ...],
        give_up_after: int | None,
        aligned: bool,
    ) -> None:
        failures = 0
        while True:
            await asyncio.sleep(next_wait(period_s, time.time(), failures, aligned, random.random()))
            try:
                await job()
            except retry as exc:
                failures += 1
                if give_up_after is not None and failures >= give_up_after:
                    raise
                self.log.warning("%s failed (%s); trying again (%d in a row)", name, exc, failures)
                continue
            failures = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking input; ``wait()`` returns and leaving the context drains."""
        self.accepting = False
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        try:
            await self.open()
        except BaseException:
            self.accepting = False
            await self._close()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.accepting = False
        if self.failed is None:  # a failed task is no reason to wait: what it left is redelivered
            try:
                await asyncio.wait_for(self.drain(), self.drain_s)
            except TimeoutError:
                self.log.error("drain deadline of %.0f s passed; what was not finished is redelivered", self.drain_s)
        await self._close()

    async def _close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        try:
            await self.stack.aclose()
        finally:
            # The tasks are cancelled and never raise (``_guarded``): the group only has to be
            # awaited. Handing it ``e`` would wrap it in an ExceptionGroup, and a caller catching
            # ConnectionError would see a traceback instead of its message.
            assert self._group is not None
            await self._group.__aexit__(None, None, None)


def serve(make: Callable[[], Service], extra: dict[str, Any] | None = None) -> int:
    """Run a service until SIGTERM or Ctrl-C; 0 when it stopped as asked, 1 when a task failed."""

    async def run() -> TaskFailedError | None:
        svc = make()
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        running = False

        def on_signal() -> None:
            # Still opening (a broker being retried, say): nothing was taken, so nothing to drain.
            if running:
                svc.stop()
            else:
                main.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            async with svc:
                running = True
                svc.log.info(f"{svc.name} running", extra=extra or {})
                await svc.wait()
        except asyncio.CancelledError:
            if running:
                raise
            svc.log.info(f"{svc.name} stopped while starting")
        return svc.failed

    with contextlib.suppress(KeyboardInterrupt):
        failed = asyncio.run(run())
        if failed is not None:
            print(f"stopped because {failed}", file=sys.stderr, flush=True)
            return 1
    return 0


@contextlib.contextmanager
def sigterm_as_interrupt() -> Any:
    """For the supervisors that block (stack run, load run): SIGTERM stops them as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
