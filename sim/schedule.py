"""When devices speak: a device's telemetry interval, the gap to its next event, and ``Schedule``,
the one heap the simulator (every device of the estate) and the load test's users (one device
each) both run on.
"""

import heapq
import itertools
from collections.abc import Callable, Sequence

from devices.estate import Device
from devices.types import Channel
from sim.behaviour import Behaviour, Emission, Obj

# A quiet hour should not push a device's next event past the busy one after it.
MAX_EVENT_GAP_MS = 3_600_000


def telemetry_interval_ms(device: Device, rate_scale: float) -> int:
    return max(1, int(device.reporting_interval_s * 1000 / rate_scale))


def next_event_gap_ms(behaviour: Behaviour, now_ms: int, rate_scale: float) -> int | None:
    """Milliseconds to the next event (a Poisson process at the rhythm's rate), or None: no events."""
    rate = behaviour.event_rate(now_ms) * rate_scale
    if rate <= 0:
        return None
    return min(int(behaviour.rng.expovariate(rate) * 1000), MAX_EVENT_GAP_MS)


_TELEMETRY, _EVENT, _DEFERRED = 0, 1, 2
# What one due entry gives: (when, which device, what it sends now by channel).
Due = tuple[int, int, dict[Channel, list[Obj]]]


class Schedule:
    """When each of many devices speaks, in event time: telemetry at its interval, events at its
    rhythm's rate, the deferred parts of what it sent. One heap for an estate (the simulator) or for
    one device (a load test user); no clock and no network: the caller says what time it is.

    ``rate`` is the multiplier now; when it changes (a load step), ``retime`` moves each device's
    pending telemetry to the new interval and redraws its next event (a Poisson process forgets
    its past, so redrawing from now is exact).
    """

    def __init__(self, behaviours: Sequence[Behaviour], rate: Callable[[], float] = lambda: 1.0) -> None:
        self.behaviours = list(behaviours)
        self.rate = rate
        self._heap: list[tuple[int, int, int, int, int, Emission | None]] = []
        self._counter = itertools.count()
        self._generation = [0] * len(self.behaviours)  # older telemetry and event entries are stale
        self._scale = 1.0

    def start(self, now_ms: int) -> None:
        """Each device's first reading at a random phase of its interval, and its first event."""
        self._scale = self.rate()
        for i, b in enumerate(self.behaviours):
            self._push(now_ms + b.rng.randrange(telemetry_interval_ms(b.device, self._scale)), _TELEMETRY, i)
            self._next_event(i, now_ms)

    def retime(self, now_ms: int) -> None:
        scale = self.rate()
        if scale == self._scale:
            return
        pending = {e[3]: e[0] for e in self._heap if e[2] == _TELEMETRY and e[4] == self._generation[e[3]]}
        old, self._scale = self._scale, scale
        for i in range(len(self.behaviours)):
            self._generation[i] += 1
            remaining = max(0, pending[i] - now_ms) if i in pending else 0
            self._push(now_ms + int(remaining * old / scale), _TELEMETRY, i)
            self._next_event(i, now_ms)

    def next_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def tick_now(self, index: int, now_ms: int) -> None:
        """An extra reading now (an incident changed what the device reads)."""
        self._push(now_ms, _TELEMETRY, index, generation=-1)

    def pop_due(self, now_ms: int) -> Due | None:
        """The next entry due by ``now_ms``: what its device sends at once (its later parts are
        scheduled), or None when nothing is due."""
        while self._heap and self._heap[0][0] <= now_ms:
            due, _, kind, index, generation, emission = heapq.heappop(self._heap)
            if kind == _DEFERRED or generation == -1:
                emissions = [emission] if emission is not None else self.behaviours[index].telemetry(due)
            elif generation != self._generation[index]:
                continue  # retimed since
            elif kind == _TELEMETRY:
                emissions = self.behaviours[index].telemetry(due)
                self._push(due + telemetry_interval_ms(self.behaviours[index].device, self._scale), _TELEMETRY, index)
            else:
                emissions = self.behaviours[index].events(due)
                self._next_event(index, due)
            return due, index, self.split(index, due, emissions)
        return None

    def split(self, index: int, now_ms: int, emissions: list[Emission]) -> dict[Channel, list[Obj]]:
        """What goes out now, by channel (readings of one instant as one message); the rest later."""
        now: dict[Channel, list[Obj]] = {}
        for delay, channel, obj in emissions:
            if delay <= 0:
                now.setdefault(channel, []).append(obj)
            else:
                self._push(now_ms + delay, _DEFERRED, index, (0, channel, obj))
        return now

    def _push(self, due_ms: int, kind: int, index: int, emission: Emission | None = None, generation: int = 0) -> None:
        gen = generation if generation == -1 else self._generation[index]
        heapq.heappush(self._heap, (due_ms, next(self._counter), kind, index, gen, emission))

    def _next_event(self, index: int, now_ms: int) -> None:
        gap = next_event_gap_ms(self.behaviours[index], now_ms, self._scale)
        if gap is not None:
            self._push(now_ms + gap, _EVENT, index)
