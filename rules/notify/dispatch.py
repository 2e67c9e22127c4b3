"""One dispatcher per robot: sends what the outbox holds, within the robot's rate, folding bursts.

Robots take about 20 messages a minute. Messages wait in the registry's outbox (so a restart loses
none and, thanks to their keys, repeats none). When more are waiting than the robot should get one by
one, they go out as one markdown summary, followed by one text mentioning everyone the summary names
(markdown cannot ring a phone). Failures back off exponentially with jitter; a permanent failure
(a revoked key) is marked failed and logged, not retried forever.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter

from rules.notify.robots import HttpRobot, SendError
from store.outbox import Outbox, Outgoing

log = logging.getLogger("estatewatch.rules.notify")
WINDOW_S = 60.0
MAX_ATTEMPTS = 12


def backoff_s(attempts: int, base: float = 1.0, cap: float = 300.0) -> float:
    return float(min(cap, base * 2.0**attempts)) * random.uniform(0.5, 1.0)


class SlidingWindow:
    """At most ``limit`` sends in any ``WINDOW_S`` seconds (a token bucket would allow a double burst)."""

    def __init__(self, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, int(limit))
        self._sent: deque[float] = deque()
        self._clock = clock

    def _trim(self) -> None:
        now = self._clock()
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()

    def free(self) -> int:
        self._trim()
        return self.limit - len(self._sent)

    def wait_s(self) -> float:
        """Seconds until one more send is allowed."""
        self._trim()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + WINDOW_S - self._clock()

    def take(self) -> None:
        self._sent.append(self._clock())


class Dispatcher:
    def __init__(
        self,
        robot: HttpRobot,
        store: Outbox,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 0.5,
        outcomes: Counter | None = None,
    ) -> None:
        """``outcomes``: a Prometheus counter labelled (channel, outcome) for /metrics."""
        self.robot = robot
        self.name = robot.channel.name
        self.store = store
        self.window = SlidingWindow(robot.channel.per_minute, clock)
        self.poll_s = poll_s
        self._outcomes = outcomes
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.wake.clear()  # before looking: a message queued while we look wakes the next round
            if not await self.run_once():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), max(self.poll_s, self.window.wait_s()))

    async def run_once(self) -> int:
        """Send what is due (one message, or one summary) if the rate allows; the rows settled."""
        if self.window.wait_s() > 0:
            return 0
        due = await self.store.due(self.name, limit=200)
        if not due:
            return 0
        if len(due) > self.robot.channel.fold_after or (len(due) > 1 and self.window.free() < len(due)):
            # Another rules service may be sending the same rows: send only what this one claims.
            claimed = await self.store.claim(due)
            return await self._fold(claimed) if claimed else 0
        first = due[0]
        if not await self.store.claim([first]):
            return 0
        if await self._post(self.robot.body(first.message, first.key), first.key, [first]):
            await self.store.settle([first.id], "sent")
            self._count("sent", 1)
        return 1

    async def _fold(self, due: list[Outgoing]) -> int:
        key = f"fold:{self.name}:{due[0].id}-{due[-1].id}:{len(due)}"
        if not await self._post(self.robot.summary_body([d.message for d in due], key), key, due):
            return len(due)
        await self.store.settle([d.id for d in due], "folded")
        self._count("folded", len(due))
        mobiles = sorted({m for d in due for m in d.message.get("mobiles", [])})
        if mobiles and self.robot.mention_body(mobiles, len(due)) is not None:
            # Queued like any message: it waits for the rate, and a restart neither loses nor repeats it.
            mention = {"mention": True, "mobiles": mobiles, "count": len(due)}
            await self.store.enqueue_many([(key + ":mention", self.name, due[0].alert_id, mention)])
        return len(due)

    def _count(self, outcome: str, n: int) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(self.name, outcome).inc(n)

    async def _post(self, body: dict[str, object], key: str, items: list[Outgoing]) -> bool:
        self.window.take()
        try:
            await self.robot.post(body, key)
        except SendError as exc:
            ids = [i.id for i in items]
            attempts = max(i.attempts for i in items) + 1
            if exc.retryable and attempts < MAX_ATTEMPTS:
                self._count("retried", len(items))
                await self.store.retry_later(ids, backoff_s(attempts), str(exc))
                log.warning("notify failed, will retry", extra={"channel": self.name, "error": str(exc)})
            else:
                self._count("failed", len(items))
                await self.store.settle(ids, "failed", str(exc))
                log.error("notify failed for good", extra={"channel": self.name, "error": str(exc)})
            return False
        return True
