"""Acknowledgements of settled messages, written together.

A batch's messages settle in one loop turn (the writer settles every entry of a stored batch); their
PUBACKs go out a turn later, one write per broker connection, instead of one write per message.
"""

import asyncio
from collections.abc import Callable

from prometheus_client import Counter

from ingest.writer import Entry

Send = Callable[[int, list[int]], bool]


class MessageEntry(Entry):
    """An entry for one MQTT message: which connection (``generation``) and packet it came as, what
    a dead letter would keep of it (``topic``, ``head``, ``size``), and when it arrived."""

    __slots__ = ("generation", "head", "packet_id", "received", "size", "topic")

    def __init__(
        self, lines: list[str], settled: Callable[[Entry], None], generation: int, packet_id: int, topic: str,
        head: bytes, size: int, received: float,
    ) -> None:  # fmt: skip
        super().__init__(lines, settled=settled)
        self.generation = generation
        self.packet_id = packet_id
        self.topic = topic
        self.head = head
        self.size = size
        self.received = received


class Acks:
    def __init__(self, send: Send, acknowledged_by: dict[str, Counter]) -> None:
        self._send = send
        self._acknowledged_by = acknowledged_by
        self._pending: dict[int, list[int]] = {}
        self._scheduled = False
        self._outcomes: dict[str, int] = dict.fromkeys(acknowledged_by, 0)

    def add(self, generation: int, packet_id: int, outcome: str) -> None:
        self._outcomes[outcome] += 1
        ids = self._pending.get(generation)
        if ids is None:
            ids = self._pending[generation] = []
        ids.append(packet_id)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending now (a drain calls it rather than waiting for the next turn)."""
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for generation, ids in pending.items():
            self._send(generation, ids)  # an earlier connection's: not sent, the broker redelivers
        for outcome, n in self._outcomes.items():
            if n:
                self._acknowledged_by[outcome].inc(n)
                self._outcomes[outcome] = 0

    @property
    def waiting(self) -> int:
        return sum(len(ids) for ids in self._pending.values())
