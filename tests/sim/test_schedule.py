"""The one schedule the simulator and the load test's devices run on: readings at each device's
interval from a random phase, whatever the mix of devices and the rate; a rate change moves the
pending reading by the ratio; extra readings (incidents) do not start a second stream."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.estate import Estate
from devices.types import Channel
from sim.behaviour import Fleet
from sim.behaviours import behaviour_for
from sim.schedule import Schedule, telemetry_interval_ms

T0 = 1_764_547_200_000


def _readings(schedule: Schedule, until_ms: int) -> dict[int, list[int]]:
    """When each device's telemetry went out (the schedule's clock, not the payload's)."""
    out: dict[int, list[int]] = {}
    while (due := schedule.next_ms()) is not None and due <= until_ms:
        entry = schedule.pop_due(due)
        if entry is not None and Channel.TELEMETRY in entry[2]:
            out.setdefault(entry[1], []).append(entry[0])
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True),
       rate=st.sampled_from([0.5, 1.0, 3.0, 40.0]), seed=st.integers(0, 1000))  # fmt: skip
def test_each_device_reads_at_its_interval_from_a_phase_within_one(
    small: Estate, picks: list[int], rate: float, seed: int
) -> None:
    devices = [small.devices[p % len(small.devices)] for p in picks]
    devices = list({d.id: d for d in devices}.values())
    fleet = Fleet.for_estate(seed)
    schedule = Schedule([behaviour_for(d, small, seed, fleet) for d in devices], lambda: rate)
    schedule.start(T0)
    horizon = T0 + 3 * max(telemetry_interval_ms(d, rate) for d in devices)
    got = _readings(schedule, horizon)
    for i, d in enumerate(devices):
        interval = telemetry_interval_ms(d, rate)
        times = got.get(i, [])
        assert times and T0 <= times[0] < T0 + interval, "the first reading within one interval"
        assert all(b - a == interval for a, b in itertools.pairwise(times))
        assert times[-1] + interval > horizon, "none missing at the end"


def test_a_rate_change_moves_the_pending_reading_by_the_ratio(small: Estate) -> None:
    rate = [1.0]
    device = next(d for d in small.devices if d.type.value == "ev_charger")
    schedule = Schedule([behaviour_for(device, small, 1, Fleet.for_estate(1))], lambda: rate[0])
    schedule.start(T0)
    first = schedule.next_ms()
    assert first is not None
    now = T0 + (first - T0) // 2
    rate[0] = 4.0
    schedule.retime(now)
    due = _readings(schedule, now + telemetry_interval_ms(device, 4.0) * 3)[0]
    assert due[0] == now + (first - now) // 4
    assert due[1] - due[0] == telemetry_interval_ms(device, 4.0)


def test_an_extra_reading_does_not_start_a_second_stream(small: Estate) -> None:
    device = next(d for d in small.devices if d.type.value == "smoke_sensor")
    schedule = Schedule([behaviour_for(device, small, 1, Fleet.for_estate(1))])
    schedule.start(T0)
    schedule.tick_now(0, T0 + 1)
    interval = telemetry_interval_ms(device, 1.0)
    times = _readings(schedule, T0 + 10 * interval)[0]
    assert times[0] == T0 + 1
    assert len(times) == 11, "the extra one, then one per interval"
