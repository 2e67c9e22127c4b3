"""Silent devices: nothing heard for ``intervals`` times a device's reporting interval.

Every expected device has a deadline from the start: one never heard at all is silent a window after
it was first expected (the engine's first message, or its registration), like one that stopped.
A disabled or deleted device leaves (``forget``).

Grouped per building (or zone, or the estate for estate-wide devices) so that a power cut or a
gateway outage raises one maintenance item listing the devices, not hundreds. Deadlines sit in a
heap, so each message costs O(log n) however large the estate.
"""

import heapq

from devices.alerts import Alert, Severity
from rules.context import Context, Where

RULE = "device_silent"
LISTED = 50  # device ids named in an item's evidence


class Silent:
    def __init__(self) -> None:
        self.last_seen: dict[str, int] = {}
        self.where: dict[str, Where] = {}
        self.deadlines: list[tuple[int, str]] = []
        self.silent: dict[str, set[str]] = {}  # group -> silent device ids
        self.scheduled: set[str] = set()  # devices with a deadline in the heap (one each at most)

    @staticmethod
    def group(where: Where) -> str:
        return where.building or where.zone or where.site

    @staticmethod
    def _window_ms(ctx: Context, where: Where) -> int:
        return int(ctx.rules_for(where).device_silent.intervals * where.device.reporting_interval_s * 1000)

    def seen(self, ctx: Context, where: Where, ts: int) -> None:
        device = where.device.id
        if ts <= self.last_seen.get(device, -1):
            return
        self.last_seen[device] = ts
        if device not in self.scheduled:
            # One deadline per device: a reading only moves last_seen; the deadline, when it comes
            # due, moves itself forward (a push per reading was most of this rule's cost).
            self.scheduled.add(device)
            self.where[device] = where
            heapq.heappush(self.deadlines, (ts + self._window_ms(ctx, where), device))
        if self.silent:
            self._out_of_group(ctx, where, ts, "back")

    def _out_of_group(self, ctx: Context, where: Where, ts: int, why: str) -> None:
        """A device no longer silent (``back``) or no longer expected (``left``): its group's item says so."""
        device, group = where.device.id, self.group(where)
        quiet = self.silent.get(group)
        if quiet and device in quiet:
            quiet.discard(device)
            if quiet:
                ctx.note(RULE, group, ts, {"ts": ts, why: device, "silent": sorted(quiet)[:LISTED],
                                           "silent_count": len(quiet)})  # fmt: skip
            else:
                del self.silent[group]
                ctx.resolve(RULE, group, ts, {"ts": ts, why: device})

    def expect(self, ctx: Context, where: Where, since: int) -> None:
        """A device that should be heard from ``since`` on; one already heard keeps its last reading."""
        device = where.device.id
        if device in self.last_seen:
            return
        self.last_seen[device] = since
        self.where[device] = where
        if device not in self.scheduled:
            self.scheduled.add(device)
            heapq.heappush(self.deadlines, (since + self._window_ms(ctx, where), device))

    def forget(self, ctx: Context, device: str, ts: int) -> None:
        """A device no longer expected (disabled, deleted): out of its group's item."""
        where = self.where.pop(device, None)
        self.last_seen.pop(device, None)
        self.scheduled.discard(device)
        if where is not None:
            self._out_of_group(ctx, where, ts, "left")

    def counts(self) -> dict[tuple[str, str | None], tuple[int, int]]:
        """(expected, silent) devices per (device type, grid): the boards' "devices reporting"."""
        quiet = set().union(*self.silent.values()) if self.silent else set()
        out: dict[tuple[str, str | None], tuple[int, int]] = {}
        for device, where in self.where.items():
            key = (where.device.type.value, where.grid)
            expected, silent = out.get(key, (0, 0))
            out[key] = (expected + 1, silent + (device in quiet))
        return out

    def adopt(self, alert: Alert) -> None:
        """An open item from before a restart: its devices stay silent until heard from."""
        listed: list[str] = next((e["silent"] for e in reversed(alert.evidence) if "silent" in e), [])
        self.silent.setdefault(alert.subject, set()).update(listed)

    def tick(self, ctx: Context, now: int) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, device = heapq.heappop(self.deadlines)
            where = self.where.get(device)
            if where is None or device not in self.scheduled:
                continue  # forgotten since it was scheduled
            expected = self.last_seen[device] + self._window_ms(ctx, where)
            if expected > deadline:
                heapq.heappush(self.deadlines, (expected, device))  # heard from since
                continue
            self.scheduled.discard(device)
            if not ctx.rules_for(where).device_silent.enabled:
                continue
            group = self.group(where)
            quiet = self.silent.setdefault(group, set())
            quiet.add(device)
            evidence = {
                "ts": now,
                "silent": sorted(quiet)[:LISTED],
                "silent_count": len(quiet),
                "last_seen": {device: self.last_seen[device]},
            }
            title = f"{len(quiet)} device(s) silent in {group}"
            if ctx.is_open(RULE, group):
                ctx.note(RULE, group, now, evidence, title=title)
            else:
                ctx.open(RULE, group, where, Severity.INFO, title, now, evidence, ctx.grid_workers(where.grid, now))
