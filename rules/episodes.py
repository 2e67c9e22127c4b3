"""When a condition began: the onset of an episode, with a dropout tolerance, in event time.

A rule with a duration (a fire lane blocked for 5 minutes, a circuit stepped up for 10) measures it
from the **onset**: the first sample that shows the condition. An *off* spell shorter than the
dropout tolerance (from its first off sample to the next on sample) does not restart the onset; a
longer one ends the episode, and the next on sample is a new onset. A gap without samples changes
nothing: the last state stands. Samples may arrive out of order (within the engine's lateness) and
twice; the timeline is kept in event-time order, so the answer is the one the sorted samples give.

Several sources (a zone's space sensors and its camera) make one condition: it is on while any
source's latest state is on.
"""

import bisect
from dataclasses import dataclass, field


@dataclass
class _Source:
    samples: list[tuple[int, bool]] = field(default_factory=list)


class Timeline:
    def __init__(self, dropout_ms: int, keep: int = 5000) -> None:
        self.dropout_ms = dropout_ms
        self.keep = keep
        self._sources: dict[str, _Source] = {}
        self._points: list[tuple[int, bool]] = []  # the combined condition, sorted by ts
        self._onset: int | None = None  # of the episode in progress, as if any trailing off spell were short
        self._off_from: int | None = None  # first sample of the trailing off run

    # -- input -----------------------------------------------------------------------------------
    def observe(self, source: str, ts: int, on: bool) -> None:
        src = self._sources.get(source)
        if src is None:
            src = self._sources[source] = _Source()
        samples = src.samples
        if samples and ts >= samples[-1][0]:
            if samples[-1] == (ts, on):
                return  # a duplicate
            if ts == samples[-1][0]:
                samples[-1] = (ts, on)  # the same moment said again: the later word counts
                self._rebuild()
                return
            samples.append((ts, on))
            self._trim(samples)
            if len(self._sources) == 1 or not self._points or ts >= self._points[-1][0]:
                self._step(ts, self._state_at_end())
                self._points.append((ts, self._state_at_end()))
                self._trim(self._points)
                return
        else:
            i = bisect.bisect_left(samples, (ts, on))
            if i < len(samples) and samples[i] == (ts, on):
                return
            samples.insert(i, (ts, on))
            self._trim(samples)
        self._rebuild()

    def _state_at_end(self) -> bool:
        return any(s.samples and s.samples[-1][1] for s in self._sources.values())

    def _trim(self, samples: list[tuple[int, bool]]) -> None:
        if len(samples) > self.keep:
            del samples[: len(samples) - self.keep]

    def _step(self, ts: int, on: bool) -> None:
        """Fold one combined sample (in order) into the episode."""
        if on:
            if self._onset is None or (self._off_from is not None and ts - self._off_from >= self.dropout_ms):
                self._onset = ts  # the first on sample, or the first after a long off spell
            self._off_from = None
        elif self._onset is not None and self._off_from is None:
            self._off_from = ts

    def _rebuild(self) -> None:
        """A sample out of order (or corrected): the combined condition and the episode from scratch."""
        events = sorted((ts, name, on) for name, s in self._sources.items() for ts, on in s.samples)
        latest: dict[str, bool] = {}
        points: list[tuple[int, bool]] = []
        for ts, name, on in events:
            latest[name] = on
            state = any(latest.values())
            if points and points[-1][0] == ts:
                points[-1] = (ts, state)
            else:
                points.append((ts, state))
        self._points = points[-self.keep :]
        self._onset = self._off_from = None
        for ts, on in self._points:
            self._step(ts, on)

    # -- questions -------------------------------------------------------------------------------
    @property
    def on(self) -> bool:
        """The condition as its latest sample says."""
        return bool(self._points) and self._points[-1][1]

    @property
    def off_since(self) -> int | None:
        """When the trailing off run began, once something was on (None while on)."""
        return self._off_from if self._points and not self._points[-1][1] else None

    def onset(self, now: int) -> int | None:
        """The onset of the episode in progress at ``now``; None when there is none (nothing on yet,
        or off for at least the dropout tolerance)."""
        if self._onset is None:
            return None
        if self._off_from is not None and now - self._off_from >= self.dropout_ms:
            return None
        return self._onset

    @property
    def empty(self) -> bool:
        return not self._points
