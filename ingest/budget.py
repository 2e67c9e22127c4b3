"""A reject budget per device: what one noisy device may cost the platform.

Per device and minute (wall clock, aligned), the first ``per_minute`` rejects are kept whole (their
payload stored, a dead-letter notice published), up to ``kept_per_day`` a UTC day; the rest are
only counted per reason. A device past its budget in a minute is *noisy*: reported once when it
crosses, and again with the minute's final counts when the minute is over.
"""

from collections import Counter
from dataclasses import dataclass, field

MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(slots=True)
class _Window:
    minute: int
    day: int
    count: int = 0
    kept_today: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Noisy:
    """A device over its budget: the minute it is about, its counts so far, and whether that minute is over."""

    key: str
    window_start_ms: int
    rejects: dict[str, int]
    final: bool

    @property
    def total(self) -> int:
        return sum(self.rejects.values())


@dataclass(frozen=True, slots=True)
class Charge:
    keep: bool  # keep this reject whole
    minute_count: int  # rejects of this device so far this minute, this one included
    crossed: Noisy | None = None  # this reject made the device noisy in this minute
    finished: Noisy | None = None  # the device's previous noisy minute, now over


class RejectBudget:
    def __init__(self, per_minute: int, kept_per_day: int) -> None:
        self.per_minute = per_minute
        self.kept_per_day = kept_per_day
        self._windows: dict[str, _Window] = {}

    def charge(self, key: str, reason: str, now_ms: int) -> Charge:
        minute, day = now_ms // MINUTE_MS, now_ms // DAY_MS
        w = self._windows.get(key)
        finished = None
        if w is None or w.minute != minute:
            if w is not None:
                finished = self._final(key, w)
            kept = w.kept_today if w is not None and w.day == day else 0
            w = self._windows[key] = _Window(minute, day, kept_today=kept)
        w.count += 1
        w.reasons[reason] += 1
        keep = w.count <= self.per_minute and w.kept_today < self.kept_per_day
        if keep:
            w.kept_today += 1
        crossed = None
        if w.count == self.per_minute + 1:
            crossed = Noisy(key, w.minute * MINUTE_MS, dict(w.reasons), final=False)
        return Charge(keep, w.count, crossed, finished)

    def current(self, key: str, now_ms: int) -> Noisy:
        """The device's counts so far in this minute."""
        w = self._windows.get(key)
        if w is None or w.minute != now_ms // MINUTE_MS:
            return Noisy(key, now_ms // MINUTE_MS * MINUTE_MS, {}, final=False)
        return Noisy(key, w.minute * MINUTE_MS, dict(w.reasons), final=False)

    def _final(self, key: str, w: _Window) -> Noisy | None:
        if w.count <= self.per_minute:
            return None
        return Noisy(key, w.minute * MINUTE_MS, dict(w.reasons), final=True)

    def sweep(self, now_ms: int) -> list[Noisy]:
        """Minutes that are over: the final report of each noisy one. A device quiet for a day is
        forgotten (what it kept that day no longer counts), so memory follows the noisy devices."""
        minute, day = now_ms // MINUTE_MS, now_ms // DAY_MS
        out = []
        for key, w in list(self._windows.items()):
            if w.minute == minute:
                continue
            final = self._final(key, w)
            if final is not None:
                out.append(final)
            if w.day != day:
                del self._windows[key]
            else:  # the day's kept count stays; the minute's counts are done with
                self._windows[key] = _Window(minute, day, kept_today=w.kept_today)
        return out
