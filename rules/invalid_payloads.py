"""A device that sends invalid payloads: ingest reports it once it is past its reject budget in a
minute (``devices/notices.py``'s NoisyDevice); this rule raises one maintenance alert per device,
with the reasons and counts, and resolves it once the device has been quiet for ``clear_after_min``.

A smoke sensor that only sends garbage is a sensor whose alarms are lost, so the alert is a warning
for the property office and the device's grid workers (its vendor sees it through the API).
"""

import heapq

from devices.alerts import Severity
from devices.notices import NoisyDevice
from rules.context import Context, Where

RULE = "invalid_payloads"


class InvalidPayloads:
    def __init__(self) -> None:
        self.last_report: dict[str, int] = {}
        self.deadlines: list[tuple[int, str]] = []
        self.where: dict[str, Where] = {}

    def handle(self, ctx: Context, where: Where, report: NoisyDevice) -> None:
        rules = ctx.rules_for(where).invalid_payloads
        if not rules.enabled:
            return
        device, ts = where.device.id, report.ts
        evidence = {
            "ts": ts,
            "window_start_ms": report.window_start_ms,
            "rejects": dict(report.rejects),
            "total": report.total,
            "budget_per_min": report.budget_per_min,
            "minute_over": report.final,
            "quarantined": report.quarantined,
        }
        quarantined = " (quarantined)" if report.quarantined else ""
        title = f"{device} sends invalid payloads{quarantined}"
        if ctx.is_open(RULE, device):
            ctx.note(RULE, device, ts, evidence, title=title)
        else:
            ctx.open(
                RULE, device, where, Severity.WARNING, title, ts, evidence,
                ctx.contacts("property_office") + ctx.grid_workers(where.grid, ts),
            )  # fmt: skip
        self._heard(ctx, where, ts)

    def _heard(self, ctx: Context, where: Where, ts: int) -> None:
        device = where.device.id
        if device not in self.last_report:
            heapq.heappush(self.deadlines, (ts + self._clear_ms(ctx, where), device))
        self.last_report[device] = max(ts, self.last_report.get(device, 0))
        self.where[device] = where

    def adopt(self, ctx: Context, where: Where, last_ts: int) -> None:
        """An open alert from before a restart: it resolves like one raised since."""
        self._heard(ctx, where, last_ts)

    @staticmethod
    def _clear_ms(ctx: Context, where: Where) -> int:
        return int(ctx.rules_for(where).invalid_payloads.clear_after_min * 60_000)

    def tick(self, ctx: Context, now: int) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, device = heapq.heappop(self.deadlines)
            where = self.where[device]
            due = self.last_report[device] + self._clear_ms(ctx, where)
            if due > now:
                heapq.heappush(self.deadlines, (due, device))  # reported again since
                continue
            del self.last_report[device]
            quiet_min = ctx.rules_for(where).invalid_payloads.clear_after_min
            ctx.resolve(RULE, device, now, {"ts": now, "quiet_min": quiet_min})
