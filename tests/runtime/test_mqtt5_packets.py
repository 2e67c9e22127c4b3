"""The MQTT 5 packet codec: round trips, incremental reads at any cut, and arbitrary bytes either
parse or raise ProtocolError (never another exception, never a read past a packet)."""

import contextlib
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.mqtt5 import packets
from runtime.mqtt5.packets import Control, ProtocolError, Publish

topics = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=80)
publishes = st.builds(
    lambda topic, payload, qos, pid, dup: (topic, payload, qos, pid if qos else 0, dup and bool(qos)),
    topics, st.binary(max_size=3000), st.integers(0, 1), st.integers(1, 0xFFFF), st.booleans(),
)  # fmt: skip


def encoded(p: tuple[str, bytes, int, int, bool]) -> bytes:
    topic, payload, qos, pid, dup = p
    return packets.publish(topic, payload, qos=qos, packet_id=pid, dup=dup)


@given(st.integers(0, packets.MAX_REMAINING))
def test_varint_round_trip(n: int) -> None:
    raw = packets.varint(n)
    assert len(raw) <= 4
    assert packets._varint_at(raw + b"rest", 0, len(raw) + 4) == (n, len(raw))


@given(st.lists(publishes, min_size=1, max_size=20), st.data())
@settings(max_examples=200)
def test_a_stream_cut_anywhere_reads_back_the_same_packets(
    sent: list[tuple[str, bytes, int, int, bool]], data: st.DataObject
) -> None:
    stream = b"".join(encoded(p) + b"\xd0\x00" for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    buffer, got = b"", []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[start:end]
        found, used = packets.split(buffer)
        got += found
        buffer = buffer[used:]
    assert buffer == b""
    messages = [p for p in got if isinstance(p, Publish)]
    assert [(m.topic, m.payload, m.qos, m.packet_id, m.dup) for m in messages] == sent
    assert [p.kind for p in got if isinstance(p, Control)] == [packets.PINGRESP] * len(sent)


@given(st.binary(max_size=400))
@settings(max_examples=2000)
def test_arbitrary_bytes_parse_or_raise_protocol_error(raw: bytes) -> None:
    try:
        found, used = packets.split(raw)
    except ProtocolError:
        return
    assert 0 <= used <= len(raw)
    for p in found:
        assert isinstance(p, Publish | Control)


@given(publishes, st.binary(min_size=1, max_size=40), st.integers(0, 3))
def test_a_mutated_publish_parses_or_raises_protocol_error(
    p: tuple[str, bytes, int, int, bool], junk: bytes, at: int
) -> None:
    raw = bytearray(encoded(p))
    raw[at % len(raw) : at % len(raw) + len(junk)] = junk
    with contextlib.suppress(ProtocolError):  # anything else (IndexError, struct.error) fails the test
        packets.split(bytes(raw))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x30\x05\x00\x09abc", "past the end"),  # topic length 9 in a 5-byte packet
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
        (b"\x34\x06\x00\x01a\x00\x01\x00", "QoS 2"),
        (b"\x32\x06\x00\x01a\x00\x00\x00", "identifier 0"),
        (b"\x30\x07\x00\x01a\x03\x23\x00\x01", "topic alias"),
        (b"\x30\x05\x00\x02\xff\xfe\x00", "not UTF-8"),
        (b"\x30\x05\x00\x02a\x00\x00", "U+0000"),
        (b"\x30\x03\x00\x00\x00", "without a topic"),
        (b"\x41\x02\x00\x01", "reserved flags"),
        (b"\x20\x04\x00\x00\x00\x00", "left over"),
        (b"\x10\x00", "not one a broker sends"),
        (b"\x90\x03\x00\x01\x00", "without reason codes"),
        (b"\x20\x05\x00\x00\x02\x99\x00", "unknown property"),
        (b"\x20\x09\x00\x00\x06\x21\x00\x01\x21\x00\x02", "given twice"),
    ],
)
def test_malformed_packets_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(why)):
        packets.split(raw)


def test_a_packet_over_the_clients_maximum_is_refused_before_it_is_read_whole() -> None:
    header = b"\x30" + packets.varint(10_000)
    with pytest.raises(ProtocolError, match="over the 5000"):
        packets.split(header, max_packet=5000)


def test_connack_and_suback_properties() -> None:
    props = b"\x21\x00\x14" + b"\x1f\x00\x02hi" + b"\x26\x00\x01k\x00\x01v" + b"\x26\x00\x01k\x00\x01w"
    connack = b"\x20" + packets.varint(2 + 1 + len(props)) + b"\x01\x00" + packets.varint(len(props)) + props
    suback = b"\x90\x05\x00\x07\x00\x01\x87"
    [c, s], used = packets.split(connack + suback)
    assert used == len(connack + suback)
    assert isinstance(c, Control) and c.session_present and c.reason == 0
    assert c.properties == {0x21: 20, 0x1F: "hi", 0x26: [("k", "v"), ("k", "w")]}
    assert isinstance(s, Control) and s.packet_id == 7 and s.codes == b"\x01\x87"


def test_connect_encodes_the_session_and_credentials() -> None:
    raw = packets.connect("c1", keepalive=30, clean_start=False, session_expiry_s=3600, receive_maximum=20_000,
                          maximum_packet_size=266_240, username="u", password="p")  # fmt: skip
    assert raw[0] == 0x10
    body = raw[2:] if raw[1] < 0x80 else raw[3:]
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC0  # user name and password, clean start off
    assert struct.unpack(">H", body[8:10]) == (30,)
    assert body[10:24] == b"\x0d\x11\x00\x00\x0e\x10\x21\x4e\x20\x27\x00\x04\x10\x00"
    assert body.endswith(b"\x00\x02c1\x00\x01u\x00\x01p")


@given(st.lists(st.integers(1, 0xFFFF), max_size=300))
def test_batched_pubacks_are_the_single_ones_joined(ids: list[int]) -> None:
    assert packets.pubacks(ids) == b"".join(packets.puback(i) for i in ids)
    found, _ = packets.split(packets.pubacks(ids))
    assert [p.packet_id for p in found if isinstance(p, Control)] == ids
