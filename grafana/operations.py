"""The boards about the estate's devices and alerts rather than what they measure: device health,
alerts, and the platform's own pipeline (what ingest writes about itself)."""

from typing import Any

from devices.types import DeviceType
from grafana.model import GRID, SITE, SITE_VAR, Panel, Query, alert_annotation, dashboard
from grafana.queries import PER, S, every_bucket_holds_each, every_heartbeat_in, now_window
from store.alert_copies import OPEN_BY_GRID_MEASUREMENT, OPEN_PERIOD_S
from store.now_series import DEVICES_NOW_MEASUREMENT
from store.series import COMPLETENESS_BY_TYPE_MEASUREMENT as BY_TYPE
from store.series import COMPLETENESS_PERIOD_S, STATS_PERIOD_S


def device_health() -> dict[str, Any]:
    return dashboard(
        "ew-health",
        "Device health",
        [
            Panel("table", "Silent devices (open alerts)",
                  [Query(f'SELECT "subject", "title", "state" FROM "alerts" WHERE {SITE} AND {GRID} AND '
                         f"\"rule\" = 'device_silent' AND $timeFilter ORDER BY time DESC LIMIT 100", format="table")],
                  width=12),
            Panel("bargauge", "Devices silent, by type",
                  [Query(f'SELECT sum("v") FROM (SELECT last("silent") AS "v" FROM "{DEVICES_NOW_MEASUREMENT}" '
                         f'WHERE {SITE} AND {GRID} AND $timeFilter GROUP BY "device_type", "grid") '
                         f'GROUP BY "device_type"', alias="$tag_device_type")],
                  width=12, now_window=every_heartbeat_in(OPEN_PERIOD_S),
                  description="Devices not heard from for the device_silent rule's window (offline ones too), "
                              "as the rules service last counted."),
            Panel("table", "Lowest batteries (space sensors and radios)",
                  [Query(f'SELECT bottom("battery_pct", "device_id", 10) FROM "{m}" WHERE {SITE} AND $timeFilter',
                         format="table")
                   for m in ("space_sensor", "radio")],
                  unit="percent", width=12, now_window=now_window(DeviceType.SPACE_SENSOR, DeviceType.RADIO),
                  transformations=[{"id": "merge", "options": {}}]),
            Panel("timeseries", "Readings missing (seq gaps), by type",
                  [Query(f'SELECT sum("missing") FROM "{BY_TYPE}" WHERE {S} GROUP BY {PER}, "device_type" fill(0)',
                         alias="$tag_device_type")],
                  width=12, interval=every_bucket_holds_each(COMPLETENESS_PERIOD_S)),
            Panel("table", "Devices with the most gaps",
                  [Query(f'SELECT top("missing", "device_id", 20) FROM "ingest_completeness" WHERE {S}',
                         format="table")],
                  width=12),
            Panel("timeseries", "Completeness, by type",
                  [Query(f'SELECT sum("received") / sum("expected") FROM "{BY_TYPE}" WHERE {S} '
                         f'GROUP BY {PER}, "device_type"', alias="$tag_device_type")],
                  unit="percentunit", width=12, interval=every_bucket_holds_each(COMPLETENESS_PERIOD_S)),
        ],
        description="Silent and offline devices, batteries, and gaps in what devices sent.",
        tags=["health"],
        annotations=(alert_annotation("device_silent|smoke_maintenance"),),
    )


def alerts() -> dict[str, Any]:
    return dashboard(
        "ew-alerts",
        "Alerts",
        [
            Panel("timeseries", "Alerts opened per grid",
                  [Query(f'SELECT count("alert_id") FROM "alerts" WHERE {SITE} AND {GRID} AND "action" = \'opened\' '
                         f'AND $timeFilter GROUP BY {PER}, "grid" fill(0)', alias="$tag_grid")],
                  width=12),
            Panel("bargauge", "Time to acknowledge per grid (mean)",
                  [Query(f'SELECT mean("ack_s") FROM "alerts" WHERE {SITE} AND {GRID} AND "action" = \'acknowledged\' '
                         f'AND $timeFilter GROUP BY "grid"', alias="$tag_grid")],
                  unit="s", width=12),
            Panel("timeseries", "Open alerts per grid",
                  [Query(f'SELECT last("open") + last("acknowledged") FROM "{OPEN_BY_GRID_MEASUREMENT}" WHERE {SITE} '
                         f'AND {GRID} AND $timeFilter GROUP BY {PER}, "grid"', alias="$tag_grid")],
                  width=12, interval=every_bucket_holds_each(OPEN_PERIOD_S)),
            Panel("bargauge", "Alert changes by rule",
                  [Query(f'SELECT count("alert_id") FROM "alerts" WHERE {SITE} AND {GRID} AND $timeFilter '
                         f'GROUP BY "rule"', alias="$tag_rule")],
                  width=12),
            Panel("table", "Latest alert changes",
                  [Query(f'SELECT "action", "rule", "severity", "grid", "building", "subject", "title", "state" '
                         f'FROM "alerts" WHERE {SITE} AND {GRID} AND $timeFilter ORDER BY time DESC LIMIT 200',
                         format="table")],
                  width=24, height=10),
        ],
        description="Alerts per grid: opened, open now, time to acknowledge, and the latest changes.",
        tags=["alerts"],
        annotations=(alert_annotation(),),
    )


def platform() -> dict[str, Any]:
    return dashboard(
        "ew-platform",
        "Platform",
        [
            Panel("timeseries", "Ingest rate (messages/s, all workers)",
                  [Query(f'SELECT sum("r") FROM (SELECT mean("rate") AS "r" FROM "ingest_stats" WHERE $timeFilter '
                         f'GROUP BY {PER}, "worker") WHERE $timeFilter GROUP BY {PER}', alias="messages/s")],
                  unit="reqps", width=12, interval=every_bucket_holds_each(STATS_PERIOD_S)),
            Panel("timeseries", "Batch write and acknowledgement latency (mean)",
                  [Query(f'SELECT mean("write_mean_s") FROM "ingest_stats" WHERE $timeFilter GROUP BY {PER}',
                         alias="InfluxDB write"),
                   Query(f'SELECT mean("ack_mean_s") FROM "ingest_stats" WHERE $timeFilter GROUP BY {PER}',
                         alias="arrival to PUBACK")],
                  unit="s", width=12),
            Panel("timeseries", "Rejects by reason",
                  [Query(f'SELECT sum("count") FROM "rejects"."ingest_reject_counts" WHERE {S} GROUP BY {PER}, '
                         f'"reason" fill(0)', alias="$tag_reason")],
                  width=12),
            Panel("timeseries", "Spool depth and messages in flight",
                  [Query(f'SELECT max("spool_bytes") FROM "ingest_stats" WHERE $timeFilter GROUP BY {PER}, "worker"',
                         alias="spool $tag_worker"),
                   Query(f'SELECT max("inflight") FROM "ingest_stats" WHERE $timeFilter GROUP BY {PER}, "worker"',
                         alias="in flight $tag_worker")],
                  width=12),
            Panel("timeseries", "Points stored, refused and spooled",
                  [Query(f'SELECT sum("{f}") FROM "ingest_stats" WHERE $timeFilter GROUP BY {PER} fill(0)', alias=f)
                   for f in ("points_written", "points_refused", "points_spooled")],
                  width=12),
            Panel("stat", "Workers connected",
                  [Query('SELECT sum("c") FROM (SELECT last("connected") AS "c" FROM "ingest_stats" WHERE '
                         '$timeFilter GROUP BY "worker")', alias="connected")],
                  width=12, now_window=every_heartbeat_in(STATS_PERIOD_S)),
        ],
        description="The pipeline itself, from what ingest writes about itself: rate, latency, rejects, spool.",
        tags=["platform"],
        variables=(SITE_VAR,),
        time_from="now-3h",
        refresh="30s",
    )
