"""When a device next speaks: its telemetry interval and the gap to its next event at a rate scale.

The simulator (one heap for the estate) and the load test's device users (one clock each) both
schedule by these.
"""

from devices.estate import Device
from sim.behaviour import Behaviour

# A quiet hour should not push a device's next event past the busy one after it.
MAX_EVENT_GAP_MS = 3_600_000


def telemetry_interval_ms(device: Device, rate_scale: float) -> int:
    return max(1, int(device.reporting_interval_s * 1000 / rate_scale))


def next_event_gap_ms(behaviour: Behaviour, now_ms: int, rate_scale: float) -> int | None:
    """Milliseconds to the next event (a Poisson process at the rhythm's rate), or None: no events."""
    rate = behaviour.event_rate(now_ms) * rate_scale
    if rate <= 0:
        return None
    return min(int(behaviour.rng.expovariate(rate) * 1000), MAX_EVENT_GAP_MS)
