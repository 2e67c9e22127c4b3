"""The reject path's parts: what a dead letter keeps, the bounded notice queue, the reject counts."""

import asyncio

from devices.types import DeviceType
from ingest.metrics import IngestMetrics
from ingest.rejects import KEEP_PAYLOAD_BYTES, Letter, Notices, RejectCounts, Source, Stamps
from ingest.writer import Entry, Outcome


def test_a_letter_keeps_text_as_text_even_cut_inside_a_character() -> None:
    text = ("烟" * 3000).encode()  # 3 bytes each: the 4 KiB cut falls inside one
    kept = Letter.of("t", text).kept()
    assert set(str(kept["payload"])) == {"烟"} and len(str(kept["payload"])) == KEEP_PAYLOAD_BYTES // 3
    assert Letter.of("t", b"\xff\xfe\x00").kept() == {"payload_base64": "//4A"}
    assert Letter.of("t", b"x" * 10_000).size == 10_000


async def test_notices_are_bounded_urgent_first_and_drops_counted() -> None:
    metrics = IngestMetrics()
    notices = Notices(2, metrics)
    assert notices.offer("a", b"1") and notices.offer("b", b"2")
    assert not notices.offer("c", b"3")  # full: dropped, not waited for
    assert notices.offer("noisy", b"!", urgent=True)
    sent: list[str] = []
    three = asyncio.Event()

    async def send(topic: str, payload: bytes) -> None:
        sent.append(topic)
        if len(sent) == 3:
            three.set()

    task = asyncio.create_task(notices.publish_forever(send))
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    assert sent == ["noisy", "a", "b"]
    sample = metrics.registry.get_sample_value
    assert sample("ingest_notices_total", {"outcome": "dropped"}) == 1
    assert sample("ingest_notices_total", {"outcome": "sent"}) == 3


async def test_reject_counts_aggregate_and_settle_once_stored() -> None:
    submitted: list[Entry] = []
    handed = asyncio.Event()

    def submit(entry: Entry) -> None:
        submitted.append(entry)
        handed.set()

    counts = RejectCounts("w1", 1.0, submit, Stamps())
    smoke = Source("s", DeviceType.SMOKE_SENSOR, "smk-1")
    waiters = [counts.add(smoke, "bad_json") for _ in range(3)] + [counts.add(Source("s"), "bad_topic")]
    flush = asyncio.create_task(counts.flush())
    await asyncio.wait_for(handed.wait(), 5)
    [entry] = submitted
    assert entry.rp == "rejects" and len(entry.lines) == 2
    tags = "device_id=smk-1,device_type=smoke_sensor,reason=bad_json,site=s,worker=w1"
    assert entry.lines[0].startswith(f"ingest_reject_counts,{tags} ")
    assert " count=3i " in entry.lines[0] and ",device_id" not in entry.lines[1]
    assert not any(w.done() for w in waiters)  # not before the point is stored
    entry.settle(Outcome.STORED)
    await flush
    assert [w.result() for w in waiters] == [Outcome.STORED] * 4
