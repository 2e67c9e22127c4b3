"""MQTT 5 packets: the subset a consuming client needs (OASIS MQTT 5.0, sections 2 and 3).

Encoding: CONNECT, SUBSCRIBE, PUBLISH (QoS 0 and 1), PUBACK, PINGREQ, DISCONNECT. Decoding: every
packet a broker sends a client; QoS 2 and AUTH are refused as protocol errors (the client never
asks for them). ``split`` is the hot path: it cuts a receive buffer into packets with the fewest
Python operations per PUBLISH, and checks every length against its packet so a malformed packet is a
``ProtocolError``, never a read into the next packet.
"""

import struct
from dataclasses import dataclass, field
from typing import Any

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
MAX_REMAINING = 268_435_455  # four bytes of variable byte integer

# Property identifiers and their wire types (section 2.2.2.2).
BYTE, U16, U32, VARINT, UTF8, BINARY, PAIR = range(7)
PROPERTY_TYPES: dict[int, int] = {
    0x01: BYTE, 0x02: U32, 0x03: UTF8, 0x08: UTF8, 0x09: BINARY, 0x0B: VARINT, 0x11: U32, 0x12: UTF8,
    0x13: U16, 0x15: UTF8, 0x16: BINARY, 0x17: BYTE, 0x18: U32, 0x19: BYTE, 0x1A: UTF8, 0x1C: UTF8,
    0x1F: UTF8, 0x21: U16, 0x22: U16, 0x23: U16, 0x24: BYTE, 0x25: BYTE, 0x26: PAIR, 0x27: U32,
    0x28: BYTE, 0x29: BYTE, 0x2A: BYTE,
}  # fmt: skip
SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS = 0x11, 0x21, 0x27, 0x23
REASON_STRING, USER_PROPERTY, SERVER_KEEP_ALIVE = 0x1F, 0x26, 0x13

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # normal disconnection: the broker keeps the session
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class ProtocolError(ValueError):
    """The peer sent something MQTT 5 does not allow; the connection must close."""


# -- what a broker sends -----------------------------------------------------------------------------
@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 at QoS 0
    dup: bool
    retain: bool
    properties: dict[int, Any] | None = None


@dataclass(slots=True)
class Control:
    """Any other packet: its type, and what the client reads of it."""

    kind: int
    packet_id: int = 0
    reason: int = 0
    session_present: bool = False
    codes: bytes = b""  # SUBACK's reason codes, one per filter
    properties: dict[int, Any] = field(default_factory=dict)


Packet = Publish | Control


# -- primitives ----------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"{n} does not fit a variable byte integer")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _varint_at(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """The value and the position after it; None when ``end`` comes first (more bytes needed)."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, end)):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    if end - pos >= 4:
        raise ProtocolError("variable byte integer longer than four bytes")
    return None


def _need(pos: int, end: int) -> None:
    if pos > end:
        raise ProtocolError("a field runs past the end of its packet")


def _utf8(raw: bytes | bytearray) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None
    if "\x00" in text:
        raise ProtocolError("string contains U+0000")
    return text


def _string_at(buf: bytes | bytearray, pos: int, end: int) -> tuple[bytes | bytearray, int]:
    _need(pos + 2, end)
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    _need(stop, end)
    return buf[pos + 2 : stop], stop


def properties_at(buf: bytes | bytearray, pos: int, end: int) -> tuple[dict[int, Any], int]:
    """A property block: {identifier: value}, user properties as a list of pairs."""
    found = _varint_at(buf, pos, end)
    if found is None:
        raise ProtocolError("property length runs past the end of its packet")
    length, pos = found
    stop = pos + length
    _need(stop, end)
    props: dict[int, Any] = {}
    while pos < stop:
        ident = buf[pos]
        kind = PROPERTY_TYPES.get(ident)
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
        pos += 1
        value: Any
        if kind == BYTE:
            _need(pos + 1, stop)
            value, pos = buf[pos], pos + 1
        elif kind == U16:
            _need(pos + 2, stop)
            value, pos = (buf[pos] << 8) | buf[pos + 1], pos + 2
        elif kind == U32:
            _need(pos + 4, stop)
            value, pos = _U32.unpack_from(buf, pos)[0], pos + 4
        elif kind == VARINT:
            got = _varint_at(buf, pos, stop)
            if got is None:
                raise ProtocolError("property runs past its block")
            value, pos = got
        elif kind == BINARY:
            raw, pos = _string_at(buf, pos, stop)
            value = bytes(raw)
        elif kind == UTF8:
            raw, pos = _string_at(buf, pos, stop)
            value = _utf8(raw)
        else:
            key, pos = _string_at(buf, pos, stop)
            val, pos = _string_at(buf, pos, stop)
            props.setdefault(ident, []).append((_utf8(key), _utf8(val)))
            continue
        if ident in props:
            raise ProtocolError(f"property 0x{ident:02x} given twice")
        props[ident] = value
    return props, stop


# -- decoding ------------------------------------------------------------------------------------------
def split(
    buf: bytes | bytearray, max_packet: int = MAX_REMAINING, max_publishes: int = MAX_REMAINING
) -> tuple[list[Packet], int]:
    """The complete packets at the start of ``buf``, and how many bytes they took: the rest is an
    incomplete packet (to be joined by what arrives next), or what follows the ``max_publishes``-th
    PUBLISH (left for when the reader can take more messages)."""
    out: list[Packet] = []
    pos, n = 0, len(buf)
    publishes = 0
    while n - pos >= 2:
        first = buf[pos]
        b = buf[pos + 1]
        if b < 0x80:
            length, body = b, pos + 2
        elif n - pos > 2 and buf[pos + 2] < 0x80:  # two bytes: every device message of 128 B to 16 KiB
            length, body = (b & 0x7F) | (buf[pos + 2] << 7), pos + 3
        else:
            found = _varint_at(buf, pos + 1, n)
            if found is None:
                break
            length, body = found
        end = body + length
        if end - pos > max_packet:
            raise ProtocolError(f"packet of {end - pos} bytes is over the {max_packet} this client allows")
        if end > n:
            break
        if first >> 4 == PUBLISH:
            if publishes == max_publishes:
                break
            publishes += 1
            out.append(_publish(buf, first, body, end))
        else:
            out.append(_control(buf, first, body, end))
        pos = end
    return out, pos


def _publish(buf: bytes | bytearray, first: int, pos: int, end: int) -> Publish:
    qos = (first >> 1) & 3
    if qos > 1:
        raise ProtocolError(f"PUBLISH at QoS {qos}: this client subscribes at QoS 1 at most")
    raw, pos = _string_at(buf, pos, end)
    topic = _utf8(raw)
    packet_id = 0
    if qos:
        _need(pos + 2, end)
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if not packet_id:
            raise ProtocolError("PUBLISH at QoS 1 with packet identifier 0")
        pos += 2
    _need(pos + 1, end)
    props = None
    if buf[pos]:
        props, pos = properties_at(buf, pos, end)
        if TOPIC_ALIAS in props:
            raise ProtocolError("topic alias sent to a client that allows none")
    else:
        pos += 1
    if not topic:
        raise ProtocolError("PUBLISH without a topic")
    return Publish(topic, bytes(buf[pos:end]), qos, packet_id, bool(first & 0x08), bool(first & 0x01), props)


_FLAGS = {PUBREL: 0x02, SUBSCRIBE: 0x02, UNSUBSCRIBE: 0x02}


def _control(buf: bytes | bytearray, first: int, pos: int, end: int) -> Control:
    kind = first >> 4
    if first & 0x0F != _FLAGS.get(kind, 0):
        raise ProtocolError(f"packet type {kind} with reserved flags 0x{first & 0x0F:x}")
    if kind == CONNACK:
        _need(pos + 2, end)
        if buf[pos] & 0xFE:
            raise ProtocolError("CONNACK with reserved acknowledge flags")
        packet = Control(kind, session_present=bool(buf[pos] & 1), reason=buf[pos + 1])
        pos += 2
        if pos < end:
            packet.properties, pos = properties_at(buf, pos, end)
        return _whole(packet, pos, end)
    if kind in (PUBACK, UNSUBACK, SUBACK):
        _need(pos + 2, end)
        packet = Control(kind, packet_id=(buf[pos] << 8) | buf[pos + 1])
        pos += 2
        if kind == PUBACK:
            if pos < end:
                packet.reason = buf[pos]
                pos += 1
                if pos < end:
                    packet.properties, pos = properties_at(buf, pos, end)
            return _whole(packet, pos, end)
        packet.properties, pos = properties_at(buf, pos, end)
        packet.codes = bytes(buf[pos:end])
        if not packet.codes:
            raise ProtocolError("SUBACK without reason codes")
        return packet
    if kind == PINGRESP:
        return _whole(Control(kind), pos, end)
    if kind == DISCONNECT:
        packet = Control(kind)
        if pos < end:
            packet.reason = buf[pos]
            pos += 1
            if pos < end:
                packet.properties, pos = properties_at(buf, pos, end)
        return _whole(packet, pos, end)
    raise ProtocolError(f"packet type {kind} is not one a broker sends this client")


def _whole(packet: Control, pos: int, end: int) -> Control:
    if pos != end:
        raise ProtocolError(f"{end - pos} bytes left over in packet type {packet.kind}")
    return packet


# -- encoding ------------------------------------------------------------------------------------------
def _str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65,535 bytes")
    return _U16.pack(len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _props(pairs: list[tuple[int, int]]) -> bytes:
    out = bytearray()
    for ident, value in pairs:
        out.append(ident)
        kind = PROPERTY_TYPES[ident]
        out += _U16.pack(value) if kind == U16 else _U32.pack(value)
    return varint(len(out)) + bytes(out)


def connect(
    client_id: str,
    *,
    keepalive: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_size: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    props = _props([(SESSION_EXPIRY, session_expiry_s), (RECEIVE_MAXIMUM, receive_maximum),
                    (MAXIMUM_PACKET_SIZE, maximum_packet_size)])  # fmt: skip
    body = _str("MQTT") + bytes((5, flags)) + _U16.pack(keepalive) + props + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(CONNECT << 4, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = _U16.pack(packet_id) + b"\x00" + b"".join(_str(f) + bytes((qos,)) for f, qos in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def publish(topic: str, payload: bytes, *, qos: int, packet_id: int = 0, dup: bool = False) -> bytes:
    first = (PUBLISH << 4) | (qos << 1) | (0x08 if dup else 0)
    body = _str(topic) + (_U16.pack(packet_id) if qos else b"") + b"\x00" + payload
    return _packet(first, body)


def puback(packet_id: int, reason: int = 0) -> bytes:
    """Success is the short form (section 3.4.2.1): two bytes of packet id, nothing more."""
    if reason:
        return b"\x40\x03" + _U16.pack(packet_id) + bytes((reason,))
    return b"\x40\x02" + _U16.pack(packet_id)


def pubacks(packet_ids: list[int]) -> bytes:
    """Success PUBACKs for many messages in one buffer: each is the four bytes 0x40 0x02 and the id,
    i.e. one big-endian 32-bit word, so the whole batch is a single ``struct.pack``."""
    return struct.pack(f">{len(packet_ids)}I", *[0x40020000 | p for p in packet_ids])
