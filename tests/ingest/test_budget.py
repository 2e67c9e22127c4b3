"""The reject budget, by property: whatever the devices send and when, each is kept whole at most
its budget a minute and its cap a day, every reject is charged once, and each noisy minute is
reported once as it crosses and once, final, when it is over."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.budget import DAY_MS, MINUTE_MS, Noisy, RejectBudget

T0 = 1_764_590_400_000  # a UTC midnight

# (device, reason, ms since T0): time runs forward, like the wall clock that stamps rejects
DEVICES, REASONS = st.sampled_from(["a", "b", "c"]), st.sampled_from(["bad_json", "schema", "too_large"])
charges = st.lists(
    st.tuples(DEVICES, REASONS, st.integers(0, 5_000)),
    max_size=400,
).map(lambda xs: [(d, r, T0 + t) for d, r, t in _forward(xs)])


def _forward(xs: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    at, out = 0, []
    for d, r, step in xs:
        at += step * (1 if step < 4_000 else 600)  # mostly dense, sometimes minutes or hours apart
        out.append((d, r, at))
    return out


@settings(max_examples=300, deadline=None)
@given(charges, st.integers(1, 20), st.integers(0, 50), st.booleans())
def test_budget_keeps_counts_and_reports_each_noisy_minute_once(
    seq: list[tuple[str, str, int]], per_minute: int, per_day: int, sweep_often: bool
) -> None:
    budget = RejectBudget(per_minute, per_day)
    kept_minute: Counter[tuple[str, int]] = Counter()
    kept_day: Counter[tuple[str, int]] = Counter()
    charged: Counter[tuple[str, int]] = Counter()
    by_reason: dict[tuple[str, int], Counter[str]] = {}
    crossed: list[Noisy] = []
    final: list[Noisy] = []
    for device, reason, now in seq:
        if sweep_often:
            final += budget.sweep(now)
        c = budget.charge(device, reason, now)
        minute = now // MINUTE_MS
        charged[(device, minute)] += 1
        by_reason.setdefault((device, minute), Counter())[reason] += 1
        assert c.minute_count == charged[(device, minute)]
        # Kept whole: exactly the minute's first ones, as long as the day's cap allows.
        assert c.keep == (charged[(device, minute)] <= per_minute and kept_day[(device, now // DAY_MS)] < per_day)
        if c.keep:
            kept_minute[(device, minute)] += 1
            kept_day[(device, now // DAY_MS)] += 1
        crossed += [c.crossed] if c.crossed else []
        final += [c.finished] if c.finished else []
    final += budget.sweep((seq[-1][2] if seq else T0) + DAY_MS)  # everything is over a day later

    assert all(n <= per_minute for n in kept_minute.values())
    assert all(n <= per_day for n in kept_day.values())
    noisy = {key for key, n in charged.items() if n > per_minute}
    assert sorted((n.key, n.window_start_ms // MINUTE_MS) for n in crossed) == sorted(noisy)
    assert sorted((n.key, n.window_start_ms // MINUTE_MS) for n in final) == sorted(noisy)
    for n in final:  # the final report has the whole minute's counts per reason
        assert n.final and n.rejects == dict(by_reason[(n.key, n.window_start_ms // MINUTE_MS)])
    for n in crossed:
        assert not n.final and n.total == per_minute + 1


def test_a_flood_keeps_the_first_whole_and_counts_the_rest() -> None:
    budget = RejectBudget(per_minute=60, kept_per_day=100)
    kept = [budget.charge("smk", "bad_json", T0 + i).keep for i in range(1000)]
    assert kept[:60] == [True] * 60 and not any(kept[60:])
    # The next minutes keep 40 more, then the day's cap holds.
    kept = [budget.charge("smk", "bad_json", T0 + MINUTE_MS + i).keep for i in range(100)]
    assert sum(kept) == 40
    assert not any(budget.charge("smk", "bad_json", T0 + 2 * MINUTE_MS + i).keep for i in range(10))
    assert budget.charge("smk", "bad_json", T0 + DAY_MS).keep  # a new day
