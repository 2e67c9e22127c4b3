"""The load test's parts that need no servers: ledgers, the verdict, scenarios, device clocks, claims."""

import itertools
import multiprocessing
import random
from collections import Counter
from pathlib import Path

import pytest

from devices.estate import Estate
from devices.types import Channel, DeviceType
from load.claims import claim
from load.device import DeviceClock
from load.ledger import DeviceTally, Ledger, from_ranges, to_ranges
from load.scenarios import PEAK_TYPES, SCENARIOS
from load.verify import judge, latency_of
from sim.behaviour import Fleet
from sim.behaviours import behaviour_for


def test_seqs_survive_the_ranges() -> None:
    seqs = {1, 2, 3, 7, 9, 10, 11, 40}
    assert to_ranges(seqs) == [[1, 3], [7, 7], [9, 11], [40, 40]]
    assert from_ranges(to_ranges(seqs)) == seqs
    assert to_ranges([]) == []


def _write_as(ledger: Ledger, folder: Path, name: str) -> None:
    """As if another process had written it (a ledger's file is named after its pid)."""
    ledger.write(folder).rename(folder / f"ledger-{name}.json")


def test_ledgers_of_the_processes_merge_and_a_device_played_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Ledger.read(tmp_path)
    _write_as(Ledger("s", {"d1": DeviceTally("radio", acked={1, 2}, connects=[5.0])}, 10.0, 20.0), tmp_path, "a")
    _write_as(Ledger("s", {"d2": DeviceTally("radio", acked={1}, unacked={2})}, 11.0, 22.0), tmp_path, "b")
    merged = Ledger.read(tmp_path)
    assert set(merged.devices) == {"d1", "d2"}
    assert (merged.started, merged.ended) == (10.0, 22.0)
    assert merged.devices["d1"].acked == {1, 2} and merged.devices["d2"].unacked == {2}
    assert merged.devices["d1"].connected_at_end and not merged.devices["d2"].connected_at_end
    _write_as(Ledger("s", {"d1": DeviceTally("radio", acked={1})}, 10.0, 20.0), tmp_path, "c")
    with pytest.raises(ValueError, match="two ledgers"):
        Ledger.read(tmp_path)


def test_the_verdict_names_loss_duplicates_and_strangers() -> None:
    ledger = Ledger("s", {
        "ok": DeviceTally("radio", acked={1, 2, 3}),
        "lossy": DeviceTally("radio", acked={1, 2, 3, 4}),
        "twice": DeviceTally("radio", acked={1, 2}),
        "late": DeviceTally("radio", acked={1}, unacked={2, 3}),
        "silent": DeviceTally("radio", acked={1}),
    })  # fmt: skip
    stored = {
        "ok": Counter({1: 1, 2: 1, 3: 1}),
        "lossy": Counter({1: 1, 3: 1}),
        "twice": Counter({1: 1, 2: 2}),
        "late": Counter({1: 1, 2: 1, 9: 1}),
    }
    v = judge(ledger, stored)
    assert (v.acked, v.missing, v.duplicates, v.unexpected) == (11, 3, 1, 1)
    assert (v.unacked, v.unacked_stored) == (2, 1)
    assert not v.ok
    assert any("lossy: seq 2, 4" in e for e in v.examples["missing"])
    assert any("silent: seq 1" in e for e in v.examples["missing"])
    assert judge(Ledger("s", {"ok": DeviceTally("radio", acked={1})}), {"ok": Counter({1: 1})}).ok


def test_latency_percentiles_count_the_timeouts_apart() -> None:
    samples: list[tuple[float, float | None]] = [(float(i), float(i)) for i in range(1, 101)]
    samples.append((101.0, None))
    lat = latency_of(samples)
    assert (lat.samples, lat.timeouts, lat.p50_ms, lat.p99_ms, lat.max_ms) == (101, 1, 50.0, 99.0, 100.0)


def test_scenarios_raise_the_right_devices() -> None:
    peak, stepup = SCENARIOS["peak"], SCENARIOS["stepup"]
    for t in DeviceType:
        assert peak.multiplier(t, 10) == (3.0 if t in PEAK_TYPES else 1.0)
        assert SCENARIOS["normal"].multiplier(t, 10) == 1.0
    assert [stepup.multiplier(DeviceType.RADIO, i * stepup.step_s + 1) for i in range(3)] == list(stepup.steps[:3])
    assert stepup.multiplier(DeviceType.RADIO, 10**6) == stepup.steps[-1]
    assert stepup.next_change_s(1) == stepup.step_s
    short = SCENARIOS["storm"].scaled(24)
    assert short.storm_at_s is not None and short.storm_at_s / short.duration_s == 90 / 240
    assert short.outage_s == 2.0


def _clock(estate: Estate, device_type: DeviceType, rate: list[float], in_unit: bool | None = None) -> DeviceClock:
    device = next(d for d in estate.devices if d.type is device_type and in_unit in (None, d.unit is not None))
    behaviour = behaviour_for(device, estate, 1, Fleet.for_estate(1))
    return DeviceClock(behaviour, lambda: rate[0])


def _run(clock: DeviceClock, start: int, end: int) -> list[tuple[Channel, list[dict[str, object]]]]:
    out = []
    now = start
    while clock.next_ms() <= end:
        now = clock.next_ms()
        out += list(clock.due(now).items())
    return out


def test_a_device_clock_keeps_its_interval_and_follows_a_new_rate(reference: Estate) -> None:
    rate = [1.0]
    clock = _clock(reference, DeviceType.RADIO, rate)  # radios report every 10 s
    t0 = 1_800_000_000_000
    clock.start(t0)
    first = _run(clock, t0, t0 + 100_000)
    telemetry = [objs for ch, objs in first if ch is Channel.TELEMETRY]
    assert 10 <= len(telemetry) <= 11
    ts = [int(str(objs[0]["ts"])) for objs in telemetry]
    assert all(b - a == 10_000 for a, b in itertools.pairwise(ts))
    rate[0] = 5.0  # a step-up step, a second after a reading: the pending one (9 s away) moves too
    step = ts[-1] + 1_000
    clock.retime(step)
    later = [int(str(objs[0]["ts"])) for ch, objs in _run(clock, step, step + 100_000) if ch is Channel.TELEMETRY]
    assert later[0] - step == 9_000 // 5
    assert all(b - a == 2_000 for a, b in itertools.pairwise(later))


def test_a_gate_clock_draws_events_at_the_scaled_rate(reference: Estate) -> None:
    def events(rate: float) -> int:
        clock = _clock(reference, DeviceType.DOOR_CONTROLLER, [rate], in_unit=False)  # a gate: thousands a day
        clock.behaviour.rng = random.Random(3)
        t0 = 1_800_000_000_000  # 16:00 in the estate: people about
        clock.start(t0)
        return sum(1 for ch, _ in _run(clock, t0, t0 + 3_600_000) if ch is Channel.EVENT)

    base, tripled = events(1.0), events(3.0)
    assert base > 0
    assert 2.2 < tripled / base < 3.8


def _claims(folder: Path, n: int, out: "multiprocessing.Queue[int]") -> None:
    for _ in range(n):
        out.put(claim(folder, "radio"))


def test_claims_are_unique_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_claims, args=(tmp_path, 50, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in range(200)]
    for p in procs:
        p.join()
    assert sorted(got) == list(range(200))
    assert claim(tmp_path, "camera") == 0
