"""One rules service's side of an alarm storm, as a process of its own: the engine's changes for
many alerts of one building applied to the alert book, unacknowledged alerts escalated, and one
robot channel drained (each message "sent" by appending its key to a file). Two of these run at
once on the same registry, as two rules services seeing the same telemetry would, while the test
acknowledges and resolves through the API.

    python -m tests.support.alert_storm DB_URL SITE SEED SENT_FILE
"""

import asyncio
import json
import os
import random
import sys
from pathlib import Path

from devices.alerts import Action, Alert, Severity
from store.alerts import AlertStore, AlertView
from store.outbox import Item
from store.registry.db import Registry

CHANNEL = "wecom"
SUBJECTS = 40
REPEATS = 6


def changes(site: str) -> list[tuple[str, int, Alert]]:
    """The same storm for every process: each smoke sensor of building b001 opens, repeats, is
    raised to critical, and half of them clear."""
    out: list[tuple[str, int, Alert]] = []
    for n in range(SUBJECTS):
        first = 1_000_000 + n * 10
        base = {"rule": "smoke", "subject": f"smoke-b001-{n:02d}", "site": site, "title": f"烟感报警 {n}",
                "first_ts": first, "building": "b001", "grid": "g01"}  # fmt: skip
        out.append(("opened", first, Alert(**base, severity=Severity.WARNING, last_ts=first)))
        for r in range(1, REPEATS + 1):
            ts = first + r * 1000
            out.append(("repeated", ts, Alert(**base, severity=Severity.WARNING, last_ts=ts)))
        raised = first + 10_000
        out.append(("updated", raised, Alert(**base, severity=Severity.CRITICAL, escalation=1, last_ts=raised)))
        if n % 2 == 0:
            out.append(("resolved", raised + 5000, Alert(**base, severity=Severity.CRITICAL, last_ts=raised + 5000)))
    # Interleaved by event time, as an engine emits them.
    return sorted(out, key=lambda c: c[1])


def robot_message(view: AlertView, action: Action) -> list[Item]:
    key = f"{CHANNEL}:{view.id}:{action.value}:{view.count}:{view.escalation}:{view.ack_escalations}"
    return [(key, CHANNEL, view.id, {"title": view.title, "action": action.value})]


async def drain(store: AlertStore, sent: Path) -> int:
    taken = await store.outbox.take(CHANNEL, limit=20)
    if taken:
        # O_APPEND: the lines of both processes land whole, in one file.
        fd = os.open(sent, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, "".join(json.dumps({"key": t.key, "pid": os.getpid()}) + "\n" for t in taken).encode())
        finally:
            os.close(fd)
        await store.outbox.settle([t.id for t in taken], "sent")
    return len(taken)


async def main(url: str, site: str, seed: int, sent: Path) -> None:
    rng = random.Random(seed)
    async with Registry(url, pooled=True) as reg:
        store = AlertStore(reg)
        for i, (change, ts, alert) in enumerate(changes(site)):
            await store.apply(change, ts, alert, robot_message)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.004))
            if i % 7 == 0:
                await drain(store, sent)
            if i % 25 == 0:
                await store.escalate_unacknowledged({"critical": [0.05, 0.2]}, lambda v, level: [f"lead-{level}"],
                                                    robot_message)  # fmt: skip
        while await drain(store, sent):
            pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
