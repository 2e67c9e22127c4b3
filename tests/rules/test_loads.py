"""The charging load per building the engine derives each minute (rules/loads.py): the summed
latest power of every port still reporting, whatever the ports' phases, intervals, jitter and the
small delays readings arrive with; a port gone quiet drops out instead of counting forever."""

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.estate import Device
from devices.types import Channel, DeviceType
from rules.context import Where
from rules.loads import PERIOD_MS, BuildingMinutes

T0 = 1_764_460_800_000
DELAY_MS = 10_000


def _where(device: str, building: str, interval_s: int) -> Where:
    return Where("s", Device(id=device, type=DeviceType.EV_CHARGER, building=building, interval_s=interval_s), "g01",
                 building, None, None)  # fmt: skip


def _feed(load: BuildingMinutes, arrivals: list[tuple[int, int, Where, int, float]]) -> dict[tuple[str, int], float]:
    """Readings fed in arrival order, ``(arrival, ts, where, port, watts)``; the engine clock is the
    latest ts seen. Returns {(building, minute end): power}."""
    clock = 0
    for _, ts, where, port, watts in sorted(arrivals, key=lambda a: a[0]):
        reading = SimpleNamespace(ts=ts, port=port, power_w=watts, state="charging", temp_c=30.0)
        load.charger(None, where, Channel.TELEMETRY, reading)  # type: ignore[arg-type]  # no context needed
        clock = max(clock, ts)
        load.tick(None, clock)  # type: ignore[arg-type]
    out = {}
    for text in load.take():
        head, fields, stamp = text.split(" ")
        building = next(t.split("=")[1] for t in head.split(",") if t.startswith("building="))
        power = float(next(f.split("=")[1] for f in fields.split(",") if f.startswith("power_w=")))
        out[(building, int(stamp) // 1_000_000)] = power
    return out


ports = st.lists(
    st.tuples(
        st.sampled_from(["b001", "b002"]),
        st.sampled_from([15, 30, 45, 60]),  # interval, s
        st.floats(min_value=0, max_value=7000, allow_nan=False),
        st.integers(min_value=0, max_value=59_999),  # phase, ms
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(ports=ports, jitter_seed=st.integers(0, 2**16), lag_ms=st.integers(0, DELAY_MS - 1))
def test_every_minute_is_the_sum_of_the_ports_still_reporting(
    ports: list[tuple[str, int, float, int]], jitter_seed: int, lag_ms: int
) -> None:
    import random

    rng = random.Random(jitter_seed)
    arrivals = []
    for i, (building, every, watts, phase) in enumerate(ports):
        where = _where(f"evc-{i}", building, every)
        t = T0 + phase
        while t < T0 + 30 * 60_000:
            # Each reading arrives up to ``lag_ms`` after its stamp (below the engine's delay).
            arrivals.append((t + rng.randrange(lag_ms + 1), t, where, 1, watts))
            t += int(every * 1000 * rng.uniform(0.8, 1.2))
    got = _feed(BuildingMinutes(delay_ms=DELAY_MS), arrivals)
    # Judge the minutes after every port's first reading and before the stream's end.
    first = T0 + 60_000 + max(p[3] for p in ports)
    minutes = [m for (_, m) in got if m >= first + 60_000 and m <= T0 + 28 * 60_000]
    assert minutes, "no minute summed"
    for minute in minutes:
        for building in {p[0] for p in ports}:
            want = sum(p[2] for p in ports if p[0] == building)
            assert got[(building, minute)] == want or abs(got[(building, minute)] - want) < 1e-6, (building, minute)


def test_a_port_gone_quiet_drops_out_and_a_building_with_none_left_is_a_gap() -> None:
    a, b = _where("evc-a", "b001", 60), _where("evc-b", "b002", 60)
    arrivals = [(t, t, a, 1, 3500.0) for t in range(T0, T0 + 20 * 60_000, 60_000)]
    arrivals += [(t, t, b, 1, 700.0) for t in range(T0, T0 + 5 * 60_000, 60_000)]  # b stops after 5 min
    got = _feed(BuildingMinutes(delay_ms=DELAY_MS), arrivals)
    assert got[("b002", T0 + 4 * 60_000)] == 700.0
    late = [m for (building, m) in got if building == "b002" and m > T0 + 4 * 60_000 + 2 * 60_000]
    assert not late, "a port silent for two intervals still counted"
    assert got[("b001", T0 + 15 * 60_000)] == 3500.0


def test_minutes_are_summed_on_their_boundaries_once_each() -> None:
    a = _where("evc-a", "b001", 30)
    got = _feed(BuildingMinutes(delay_ms=DELAY_MS), [(t, t, a, 1, 100.0) for t in range(T0, T0 + 10 * 60_000, 30_000)])
    stamps = sorted(m for (_, m) in got)
    assert all(m % PERIOD_MS == 0 for m in stamps) and len(stamps) == len(set(stamps))
    assert stamps == list(range(stamps[0], stamps[-1] + 1, PERIOD_MS)), "a minute skipped"


def test_a_buildings_smoke_signal_is_the_mean_of_its_sensors_latest() -> None:
    minutes = BuildingMinutes(delay_ms=DELAY_MS)
    sensors = [(_where(f"smk-{i}", "b001", 300), -60.0 - 10 * i, i * 40_000) for i in range(3)]
    readings = sorted((T0 + phase + k * 300_000, where, rssi) for where, rssi, phase in sensors for k in range(6))
    for ts, where, rssi in readings:
        minutes.smoke(None, where, Channel.TELEMETRY, SimpleNamespace(ts=ts, rssi_dbm=rssi))  # type: ignore[arg-type]
        minutes.tick(None, ts)  # type: ignore[arg-type]
    points = [p for p in minutes.take() if p.startswith("smoke_signal,")]
    assert points and all("rssi_mean_dbm=-70.0," in p and "sensors=3i" in p for p in points[2:]), points[:4]
