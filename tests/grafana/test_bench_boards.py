"""``estatewatch bench boards`` on a sliver of the reference estate: what it generates is what ingest
and the platform write, InfluxDB takes all of it, and every panel of every board is timed at every
span without an InfluxQL error (the figures themselves come from the full run, docs/performance.md)."""

import asyncio
import time

from bench.boards_bench import SPANS, Results, history_lines, load_boards, prepare, report, share_of, time_panels
from devices.reference import reference_estate
from grafana.build import DASHBOARDS
from grafana.macros import panel_queries
from store.influx import Influx
from tests.support.servers import InfluxServer

HOUR_MS = 3_600_000


def test_a_generated_day_lands_and_every_panel_answers_within_its_row_bound(influxd: InfluxServer) -> None:
    """A day of a sliver of the reference estate (the share holding building b001: 69 devices of
    seven kinds), as the bench writes it: InfluxDB takes all of it, and every panel at
    every span answers without an InfluxQL error and with no series longer than twice Grafana's
    1,000 points."""
    estate = reference_estate()
    db = "bench_boards_test"
    end = int(time.time() * 1000) // 60_000 * 60_000
    shares, hours = 100, 24
    b001 = next(d for d in estate.devices if d.building == "b001")
    lines = [text for h in range(hours) for text in history_lines(estate, share_of(b001, shares), shares,
                                                                    end - (hours - h) * HOUR_MS)]  # fmt: skip
    assert any(text.startswith("charging_load,") for text in lines), "no charging load derived"

    async def go() -> Results:
        async with Influx(influxd.url, db) as influx:
            await prepare(influx, estate, end - hours * HOUR_MS, end)
            for i in range(0, len(lines), 5000):  # any line InfluxDB refused would raise here
                await influx.write("\n".join(lines[i : i + 5000]).encode(), precision="ns")
            stored = await influx.query("SELECT count(\"seq\") FROM /^(smoke_sensor|radio|ev_charger)$/")
            assert stored and stored[0], "readings landed in 1970 or nowhere"
        results = Results()
        await time_panels(influxd.url, db, estate.site.id, end, load_boards(None), 30, lambda _: None, results, runs=1)
        return results

    results = asyncio.run(go())
    boards = load_boards(None)
    assert len(results.panels) == sum(1 for b in boards for _ in panel_queries(b))
    for p in results.panels:
        assert set(p.seconds) == set(SPANS) and max(p.seconds.values()) < float("inf"), p.label
        assert max(p.longest.values()) <= 2 * 1000, f"{p.label}: {p.longest}"
    assert max(p.longest["24 h"] for p in results.panels) > 1000, "the day did not fill a panel's buckets"
    assert {p.label for p in results.panels if p.windowed} >= {"Estate overview / Devices reporting, by type / A"}
    table = report(results)
    assert table.count("\n| ") == len(results.panels) + 2  # header, rule, a row per query


def test_older_dashboards_are_read_from_their_json_files() -> None:
    assert len(load_boards(DASHBOARDS)) == len(load_boards(None)) == 9
