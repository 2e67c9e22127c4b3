"""The load scenarios: which hour of the estate's day is played, at what rate, for how long.

Both sides read this: the Locust shape on the master (users, when to stop) and each device user on
the workers (its rate multiplier at a given second of the run). Pure functions of the elapsed time,
so every process agrees without talking.
"""

from dataclasses import dataclass, field

from devices.types import DeviceType

# The evening peak's busy types: people come home, open doors and plug in their e-bikes.
PEAK_TYPES = frozenset({DeviceType.EV_CHARGER, DeviceType.DOOR_CONTROLLER, DeviceType.VEHICLE_GATE})


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    hour: float  # local hour of the estate day whose rhythm is played
    duration_s: float
    multipliers: dict[DeviceType, float] = field(default_factory=dict)
    # Reconnect storm: the broker goes down at ``storm_at_s`` for ``outage_s`` seconds.
    storm_at_s: float | None = None
    outage_s: float = 0.0
    # Step-up: the rate multiplier of every device, one entry per step of ``step_s`` seconds.
    steps: tuple[float, ...] = ()
    step_s: float = 0.0

    def multiplier(self, device_type: DeviceType, elapsed_s: float) -> float:
        base = self.multipliers.get(device_type, 1.0)
        if self.steps:
            return base * self.steps[self.step_index(elapsed_s)]
        return base

    def step_index(self, elapsed_s: float) -> int:
        if not self.steps:
            return 0
        return min(len(self.steps) - 1, max(0, int(elapsed_s // self.step_s)))

    def next_change_s(self, elapsed_s: float) -> float | None:
        """Seconds into the run of the next step, or None: the rates stay as they are."""
        if not self.steps or self.step_index(elapsed_s) >= len(self.steps) - 1:
            return None
        return (self.step_index(elapsed_s) + 1) * self.step_s

    def scaled(self, duration_s: float | None) -> "Scenario":
        """The same scenario over another duration (the tests' seconds-long versions): storm and steps
        keep their places relative to the run."""
        if duration_s is None or duration_s == self.duration_s:
            return self
        k = duration_s / self.duration_s
        return Scenario(
            self.name, self.summary, self.hour, duration_s, dict(self.multipliers),
            None if self.storm_at_s is None else self.storm_at_s * k, self.outage_s * k,
            self.steps, self.step_s * k,
        )  # fmt: skip


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "a normal weekday morning, every device connected", hour=10.0, duration_s=300),
        Scenario(
            "peak",
            "the evening peak: charging and doors at 3x on top of the 19:00 rhythm",
            hour=19.0,
            duration_s=300,
            multipliers=dict.fromkeys(PEAK_TYPES, 3.0),
        ),
        Scenario(
            "storm",
            "reconnect storm: the broker restarts, every device reconnects and sends its backlog",
            hour=19.0,
            duration_s=240,
            storm_at_s=90,
            outage_s=20,
        ),
        Scenario(
            "stepup",
            "step-up: every device's rate multiplied step by step until the pipeline falls behind",
            hour=19.0,
            duration_s=660,
            steps=(1, 3, 5, 7, 10, 14, 20, 28, 40, 56, 80),
            step_s=60,
        ),
    )
}
# `make load` runs these in turn.
ALL = ("normal", "peak", "storm", "stepup")
