import contextlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.catalog import CATALOG, MAX_BATCH, MAX_PAYLOAD_BYTES, PayloadError, parse_payload
from devices.payloads.common import Status
from devices.plates import PROVINCES, SUFFIXES, canonical, is_plate
from devices.reference import reference_estate
from devices.types import Channel, DeviceType
from sim.behaviour import Fleet
from sim.behaviours import behaviour_for

TS = 1_764_590_400_000
METER = {"ts": TS, "seq": 1, "power_w": 28.4, "voltage_v": 221.0, "current_a": 0.13, "energy_wh": 5.0}


def parse(
    obj: object, device_type: DeviceType = DeviceType.POWER_METER, channel: Channel = Channel.TELEMETRY
) -> object:
    return parse_payload(device_type, channel, json.dumps(obj).encode())


def reason(raw: bytes, device_type: DeviceType = DeviceType.POWER_METER, channel: Channel = Channel.TELEMETRY) -> str:
    with pytest.raises(PayloadError) as err:
        parse_payload(device_type, channel, raw)
    return err.value.reason


def test_single_and_batch() -> None:
    assert len(parse(METER)) == 1  # type: ignore[arg-type]
    assert len(parse([METER, {**METER, "seq": 2}])) == 2  # type: ignore[arg-type]


def test_integers_are_accepted_for_floats_but_not_the_reverse() -> None:
    assert parse({**METER, "power_w": 28})[0].power_w == 28.0  # type: ignore[index]
    assert reason(json.dumps({**METER, "seq": 1.5}).encode()) == "schema"
    assert reason(json.dumps({**METER, "seq": True}).encode()) == "schema"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ts": 1764590400000, "seq": 1, "power_w": NaN, "voltage_v": 1, "current_a": 1, "energy_wh": 1}',
        b'{"ts": 1764590400000, "seq": 1, "power_w": Infinity, "voltage_v": 1, "current_a": 1, "energy_wh": 1}',
        b'{"ts": 1764590400000, "seq": 1, "power_w": -Infinity, "voltage_v": 1, "current_a": 1, "energy_wh": 1}',
        b'{"ts": 1764590400000, "seq": 1, "power_w": 1e400, "voltage_v": 1, "current_a": 1, "energy_wh": 1}',
    ],
)
def test_non_finite_numbers_are_rejected(raw: bytes) -> None:
    assert reason(raw) == "schema"


def test_huge_integer_and_deep_nesting_are_rejected_not_raised() -> None:
    assert reason(b'{"ts": ' + b"9" * 4300 + b', "seq": 1}') == "schema"
    assert reason(b"[" * 100_000 + b"]" * 100_000) == "bad_json"
    assert reason(b'{"ts": 1764590400000, "seq": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}") == "bad_json"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"power_w": -1}, "negative power"),
        ({"voltage_v": 5000}, "out of range"),
        ({"ts": 1_764_590_400}, "seconds, not milliseconds"),
        ({"ts": 99_999_999_999_999}, "year 5138"),
        ({"seq": -1}, "negative seq"),
        ({"seq": 2**60}, "seq beyond 2**53"),
        ({"extra": 1}, "unknown field"),
        ({"power_w": "28.4"}, "string for a number"),
    ],
)
def test_schema_violations(change: dict[str, object], why: str) -> None:
    assert reason(json.dumps({**METER, **change}).encode()) == "schema", why


def test_missing_field_empty_and_oversized_batches() -> None:
    assert reason(json.dumps({k: v for k, v in METER.items() if k != "power_w"}).encode()) == "schema"
    assert reason(b"[]") == "schema"
    assert reason(json.dumps([METER] * (MAX_BATCH + 1)).encode()) == "schema"
    assert reason(b" " * (MAX_PAYLOAD_BYTES + 1)) == "too_large"


def test_events_are_discriminated_by_type() -> None:
    ok = {"ts": TS, "seq": 1, "type": "held_open", "open_s": 130.0}
    assert parse(ok, DeviceType.DOOR_CONTROLLER, Channel.EVENT)[0].open_s == 130.0  # type: ignore[index]
    assert (
        reason(json.dumps({**ok, "type": "teleport"}).encode(), DeviceType.DOOR_CONTROLLER, Channel.EVENT) == "schema"
    )
    assert reason(json.dumps({"ts": TS, "seq": 1}).encode(), DeviceType.DOOR_CONTROLLER, Channel.EVENT) == "schema"


def test_power_meters_have_no_event_channel() -> None:
    assert (
        reason(json.dumps({"ts": TS, "seq": 1, "type": "x"}).encode(), DeviceType.POWER_METER, Channel.EVENT)
        == "bad_channel"
    )


@pytest.mark.parametrize(
    ("plate", "ok"),
    [
        ("苏C12345", True),
        ("苏CD12345", True),
        ("京A0B1C2", True),
        ("苏C1234学", True),
        ("苏C1234警", True),
        ("苏C1234应急", True),
        ("苏C·A1200", True),
        ("苏C A1200", True),
        ("苏Ｃ１２３４５", True),
        ("苏c12345", True),
        ("苏C12345\n", True),
        ("SUC12345", False),
        ("苏C1234", False),
        ("苏C,x=1 y", False),
        ("沪C12345应急", False),
        ("喵C12345", False),
        ("苏C" + "1" * 40, False),
    ],
)
def test_plates(plate: str, ok: bool) -> None:
    body = {"ts": TS, "seq": 1, "type": "plate_read", "plate": plate, "direction": "in", "confidence": 0.9}
    raw = json.dumps(body, ensure_ascii=False).encode()
    if ok:
        [read] = parse_payload(DeviceType.VEHICLE_GATE, Channel.EVENT, raw)
        assert read.plate == canonical(plate) and is_plate(read.plate)  # type: ignore[union-attr]
    else:
        assert reason(raw, DeviceType.VEHICLE_GATE, Channel.EVENT) == "schema"


plain = st.builds(
    lambda p, o, body: p + o + body,
    st.sampled_from(PROVINCES), st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZ"),
    st.one_of(
        st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=5, max_size=6),
        st.builds(lambda d, s: d + s, st.text("0123456789", min_size=4, max_size=4),
                  st.sampled_from([*SUFFIXES, "应急"])),
    ),
)  # fmt: skip


@given(plain, st.lists(st.sampled_from(["·", " ", "•", "-", "．", "\u3000"]), max_size=3), st.booleans(), st.booleans())
def test_every_form_a_camera_sends_is_the_same_plate(plate: str, seps: list[str], wide: bool, lower: bool) -> None:
    assert is_plate(plate) and canonical(plate) == plate
    text = plate[:2] + "".join(seps) + plate[2:]
    if wide:
        text = "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)
    if lower:
        text = text.lower()
    assert canonical(text) == plate and canonical(canonical(text)) == plate


def test_status_is_one_object() -> None:
    status = parse({"state": "offline", "ts": TS}, DeviceType.RADIO, Channel.STATUS)
    assert isinstance(status, Status)
    assert reason(b'[{"state": "online", "ts": 1764590400000}]', DeviceType.RADIO, Channel.STATUS) == "schema"


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_payload_error(raw: bytes) -> None:
    for device_type in DeviceType:
        for channel in Channel:
            with contextlib.suppress(PayloadError):
                parse_payload(device_type, channel, raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    base=st.sampled_from(list(DeviceType)),
    key=st.sampled_from(["ts", "seq", "type", "power_w", "plate", "x"]),
    value=json_values,
)
def test_mutated_payloads_never_crash_the_parser(base: DeviceType, key: str, value: object) -> None:
    body = json.dumps({"ts": TS, "seq": 1, key: value}, allow_nan=True).encode()
    for channel in (Channel.TELEMETRY, Channel.EVENT):
        try:
            readings = parse_payload(base, channel, body)
        except PayloadError:
            continue
        assert isinstance(readings, list)


def test_everything_the_simulator_sends_validates() -> None:
    """Hours of simulated traffic of every device type, each payload through the strict parser."""
    estate = reference_estate()
    fleet = Fleet.for_estate(3)
    picked = {}
    for d in estate.devices:
        picked.setdefault(d.type, []).append(d)
    seq = 0
    checked = dict.fromkeys(DeviceType, 0)
    for device_type, devices in picked.items():
        for device in random.Random(1).sample(devices, min(5, len(devices))):
            b = behaviour_for(device, estate, 3, fleet)
            for step in range(0, 48 * 3600_000, 600_000):  # two days, every 10 minutes
                for _, channel, obj in b.telemetry(TS + step) + b.events(TS + step):
                    seq += 1
                    parse_payload(device_type, channel, json.dumps({**obj, "seq": seq}, ensure_ascii=False).encode())
                    checked[device_type] += 1
    assert all(checked[t] > 0 for t in CATALOG), checked
