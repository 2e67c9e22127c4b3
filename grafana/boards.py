"""The nine EstateWatch boards. Every query reads only what ingest and the rules service write
(store/series.py, ingest_stats, ingest_completeness, ingest_reject_counts, alerts, alerts_open); the tests
run each one against a real InfluxDB holding a simulated estate day.
"""

from typing import Any

from devices.types import DeviceType
from grafana.model import (
    GRID,
    SITE,
    SITE_VAR,
    Panel,
    Query,
    alert_annotation,
    dashboard,
)
from grafana.operations import alerts, device_health, platform
from grafana.queries import (
    HIDE_TIME,
    LEGEND_TABLE,
    PER,
    B,
    S,
    Z,
    count_last,
    events,
    every_bucket_holds_each,
    every_heartbeat_in,
    level_interval,
    now_window,
    summed_means,
)
from store.alert_copies import OPEN_PERIOD_S
from store.now_series import (
    CHARGING_LOAD_MEASUREMENT,
    CHARGING_LOAD_PERIOD_S,
    DEVICES_NOW_MEASUREMENT,
    SMOKE_SIGNAL_MEASUREMENT,
)


def overview() -> dict[str, Any]:
    return dashboard(
        "ew-overview",
        "Estate overview",
        [
            Panel(
                "bargauge",
                "Devices reporting, by type",
                [Query(f'SELECT sum("v") FROM (SELECT last("reporting") AS "v" FROM "{DEVICES_NOW_MEASUREMENT}" '
                       f'WHERE {SITE} AND {GRID} AND $timeFilter GROUP BY "device_type", "grid") '
                       f'GROUP BY "device_type"',
                       alias="$tag_device_type")],
                width=8,
                now_window=every_heartbeat_in(OPEN_PERIOD_S),
                description="Devices heard from within their silence window, as the rules service last counted "
                            "(Device health lists the silent ones).",
            ),
            Panel(
                "bargauge",
                "Open alerts, by rule",
                [
                    Query(f'SELECT sum("open") + sum("acknowledged") FROM (SELECT last("open") AS "open", '
                          f'last("acknowledged") AS "acknowledged" FROM "alerts_open" WHERE {SITE} AND {GRID} '
                          f'AND $timeFilter GROUP BY "rule", "grid") GROUP BY "rule"', alias="$tag_rule"),
                ],
                width=8,
                now_window=every_heartbeat_in(OPEN_PERIOD_S),
                description="Alerts not yet resolved (open or acknowledged), as the rules service last counted.",
            ),
            Panel(
                "stat",
                "Open alerts, by severity",
                [
                    Query(f'SELECT sum("{sev}") FROM (SELECT last("{sev}") AS "{sev}" FROM "alerts_open" WHERE '
                          f'{SITE} AND {GRID} AND $timeFilter GROUP BY "rule", "grid")', alias=sev)
                    for sev in ("critical", "warning", "info")
                ],
                width=8,
                now_window=every_heartbeat_in(OPEN_PERIOD_S),
            ),
            Panel(
                "timeseries",
                "Charging load, whole estate",
                [Query(summed_means(CHARGING_LOAD_MEASUREMENT, "power_w", B, "", '"building"'), alias="charging")],
                unit="watt",
                width=16,
                interval=every_bucket_holds_each(CHARGING_LOAD_PERIOD_S),
            ),
            Panel(
                "stat",
                "Charging ports in use now",
                [Query(count_last("ev_charger", "state", B, "\"v\" = 'charging'", series='"port"'), alias="charging")],
                width=8,
                now_window=now_window(DeviceType.EV_CHARGER),
            ),
            Panel(
                "stat",
                "Occupied spaces, by zone",
                [Query(count_last("space_sensor", "occupied", Z, '"v" = true', '"zone"'), alias="$tag_zone")],
                width=12,
                now_window=now_window(DeviceType.SPACE_SENSOR),
            ),
            Panel(
                "timeseries",
                "Fire-lane and parking zones occupied (camera)",
                [Query(events("camera_event", "zone_occupied", Z, '"zone"'), alias="$tag_zone")],
                width=12,
            ),
            Panel(
                "stat",
                "Smoke sensors in alarm or fault",
                [Query(count_last("smoke_sensor", "state", B, "\"v\" != 'normal'", '"building"'),
                       alias="$tag_building")],
                width=12,
                now_window=now_window(DeviceType.SMOKE_SENSOR),
                defaults={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                       {"color": "red", "value": 1}]}},
            ),
            Panel(
                "stat",
                "Radios on patrol",
                [Query(f'SELECT count("v") FROM (SELECT last("lat") AS "v" FROM "radio" WHERE {S} '
                       f'GROUP BY "device_id")', alias="radios")],
                width=12,
                now_window=now_window(DeviceType.RADIO),
                description="Radios that reported a position lately.",
            ),
        ],
        description="One screen for the whole estate: devices, alerts, charging, parking, fire safety, patrol.",
        tags=["overview"],
        annotations=(alert_annotation(),),
        time_from="now-6h",
    )


def charging() -> dict[str, Any]:
    return dashboard(
        "ew-charging",
        "Charging",
        [
            Panel("timeseries", "Charging load per building",
                  [Query(f'SELECT mean("power_w") FROM "{CHARGING_LOAD_MEASUREMENT}" WHERE {B} '
                         f'GROUP BY {PER}, "building"', alias="$tag_building")],
                  unit="watt", width=12, options=LEGEND_TABLE,
                  interval=every_bucket_holds_each(CHARGING_LOAD_PERIOD_S),
                  description="The rules engine's sum of every port's latest power, each minute (charging_load)."),
            Panel("bargauge", "Load per pile now",
                  [Query(f'SELECT sum("v") FROM (SELECT last("power_w") AS "v" FROM "ev_charger" WHERE {B} '
                         f'GROUP BY "device_id", "port") GROUP BY "device_id"', alias="$tag_device_id")],
                  unit="watt", width=12, now_window=now_window(DeviceType.EV_CHARGER),
                  description="Each pile's ports summed at their latest reading; the history is per building."),
            Panel("timeseries", "Sessions started and stopped",
                  [Query(events("ev_charger_event", "session_start", B), alias="started"),
                   Query(events("ev_charger_event", "session_stop", B), alias="stopped")],
                  width=8),
            Panel("table", "Port faults",
                  [Query(f'SELECT "code", "device_id", "port", "building" FROM "ev_charger_event" WHERE '
                         f"\"event_type\" = 'fault' AND {B} ORDER BY time DESC LIMIT 100", format="table")],
                  width=8),
            Panel("timeseries", "Port temperature, hottest per building",
                  [Query(f'SELECT max("temp_max_c") FROM "{CHARGING_LOAD_MEASUREMENT}" WHERE {B} '
                         f'GROUP BY {PER}, "building"', alias="$tag_building")],
                  unit="celsius", width=8, interval=every_bucket_holds_each(CHARGING_LOAD_PERIOD_S),
                  description="Over-temperature stops are listed under 'Stops by reason'."),
            Panel("stat", "Sessions stopped, and stopped over temperature",
                  [Query(f'SELECT count("seq") FROM "ev_charger_event" WHERE "event_type" = \'session_stop\' '
                         f"{extra}AND {B}", alias=alias)
                   for alias, extra in (("stopped", ""), ("over temperature", "AND \"reason\" = 'over_temperature' "))],
                  width=8),
            Panel("timeseries", "Stairwell circuit load per unit (the flying-lead signal at night)",
                  [Query(f'SELECT mean("power_w") FROM "power_meter" WHERE {B} GROUP BY {PER}, "building", "unit"',
                         alias="$tag_building $tag_unit")],
                  unit="watt", width=16,
                  # A line per unit (about 300): at a day's 1 min buckets InfluxDB 1.6 took 3.3 s for
                  # 430,000 rows. Night-long charging shows as well in 10 min means.
                  interval="10m",
                  description="A charger-sized step on a stairwell circuit at night is an e-bike charged from a "
                              "flying lead; the flying_lead rule alerts on it (annotations)."),
        ],
        description="Charging piles and stairwell circuits: load, sessions, faults and the flying-lead signal.",
        tags=["charging"],
        annotations=(alert_annotation("flying_lead|charger_overtemp|charger_fault|charger_overload"),),
    )


def fire_safety() -> dict[str, Any]:
    return dashboard(
        "ew-fire",
        "Fire safety",
        [
            Panel("stat", "Sensors not normal, by state",
                  [Query(count_last("smoke_sensor", "state", B, f"\"v\" = '{state}'"), alias=state)
                   for state in ("alarm", "fault")],
                  width=8, now_window=now_window(DeviceType.SMOKE_SENSOR)),
            Panel("table", "Sensors not normal",
                  [Query(f'SELECT "state", "building", "unit", "device_id" FROM (SELECT last("state") AS "state" '
                         f'FROM "smoke_sensor" WHERE {B} GROUP BY "device_id", "building", "unit") '
                         f"WHERE \"state\" != 'normal'", format="table")],
                  width=16, transformations=HIDE_TIME, now_window=now_window(DeviceType.SMOKE_SENSOR)),
            Panel("timeseries", "Smoke events by kind",
                  [Query(events("smoke_sensor_event", kind, B), alias=kind)
                   for kind in ("alarm", "fault", "low_battery", "test")],
                  width=12),
            Panel("timeseries", "Alarms per building",
                  [Query(events("smoke_sensor_event", "alarm", B, '"building"'), alias="$tag_building")],
                  width=12),
            Panel("bargauge", "Lowest batteries",
                  [Query(f'SELECT bottom("battery_pct", "device_id", 10) FROM "smoke_sensor" WHERE {B}',
                         format="table")],
                  unit="percent", width=12, now_window=now_window(DeviceType.SMOKE_SENSOR)),
            Panel("timeseries", "Signal strength per building (mean)",
                  [Query(f'SELECT mean("rssi_mean_dbm") FROM "{SMOKE_SIGNAL_MEASUREMENT}" WHERE {B} '
                         f'GROUP BY {PER}, "building"', alias="$tag_building")],
                  unit="dBm", width=12, interval=every_bucket_holds_each(CHARGING_LOAD_PERIOD_S),
                  description="Each minute, the mean of the building's sensors' latest signal (smoke_signal)."),
        ],
        description="Smoke sensors: states, alarms over time, battery and signal health.",
        tags=["fire"],
        annotations=(alert_annotation("fire|smoke_maintenance"),),
    )


def access() -> dict[str, Any]:
    return dashboard(
        "ew-access",
        "Access",
        [
            Panel("barchart", "Entries by method and hour",
                  [Query(f'SELECT count("granted") FROM "door_controller_event" WHERE "event_type" = \'access\' '
                         f"AND \"granted\" = true AND \"method\" = '{m}' AND {B} GROUP BY time(1h) fill(0)", alias=m)
                   for m in ("card", "face", "qr", "password")],
                  width=24, interval="1h"),
            Panel("timeseries", "Denied attempts",
                  [Query(f'SELECT count("granted") FROM "door_controller_event" WHERE "event_type" = \'access\' '
                         f'AND "granted" = false AND {B} GROUP BY {PER}, "building" fill(0)',
                         alias="$tag_building")],
                  width=12),
            Panel("timeseries", "Forced, held open and tailgating",
                  [Query(events("door_controller_event", kind, B), alias=kind)
                   for kind in ("forced_open", "held_open", "tailgating")],
                  width=12),
            Panel("table", "Latest door incidents",
                  [Query(f'SELECT "event_type", "building", "unit", "device_id", "open_s", "persons" FROM '
                         f'"door_controller_event" WHERE "event_type" =~ /^(forced_open|held_open|tailgating)$/ '
                         f"AND {B} ORDER BY time DESC LIMIT 50", format="table")],
                  width=24),
        ],
        description="Door controllers: who comes in how, denials, forced doors, doors held open, tailgating.",
        tags=["access"],
        annotations=(alert_annotation("door_held_open|door_forced|tailgating"),),
    )


def parking() -> dict[str, Any]:
    return dashboard(
        "ew-parking",
        "Parking and fire lanes",
        [
            Panel("state-timeline", "Fire-lane spaces occupied",
                  [Query(f'SELECT last("occupied") FROM "space_sensor" WHERE {Z} AND "zone" =~ /^fl-/ '
                         f'GROUP BY {PER}, "zone", "device_id" fill(previous)', alias="$tag_device_id")],
                  width=24, height=8),
            # No fill(previous) inside: the minimum interval already gives every sensor a reading in
            # each bucket, and InfluxDB 1.6 answers an outer aggregate over a fill(previous)
            # subquery with one row per inner series (13,024 rows for 379 buckets, measured).
            Panel("timeseries", "Occupied spaces per zone",
                  [Query(f'SELECT count("v") FROM (SELECT last("occupied") AS "v" FROM "space_sensor" WHERE {Z} '
                         f'GROUP BY {PER}, "device_id", "zone") WHERE "v" = true AND $timeFilter '
                         f'GROUP BY {PER}, "zone"', alias="$tag_zone")],
                  width=12, interval=level_interval(DeviceType.SPACE_SENSOR)),
            Panel("timeseries", "Vehicles in and out",
                  [Query(f'SELECT count("plate") FROM "vehicle_gate_event" WHERE "event_type" = \'plate_read\' '
                         f"AND \"direction\" = '{d}' AND {S} GROUP BY {PER} fill(0)", alias=d)
                   for d in ("in", "out")],
                  width=12),
            Panel("table", "Long stays and blocked fire lanes (alerts)",
                  [Query(f'SELECT "subject", "title", "state", "severity", "rule" FROM "alerts" WHERE {SITE} '
                         f'AND {GRID} '
                         f'AND "rule" =~ /^(zombie_car|fire_lane)$/ AND $timeFilter ORDER BY time DESC LIMIT 100',
                         format="table")],
                  width=24),
        ],
        description="Parking zones and fire lanes: occupancy over time, gate traffic, long-stay plates.",
        tags=["parking"],
        annotations=(alert_annotation("fire_lane|zombie_car"),),
    )


def patrol() -> dict[str, Any]:
    geomap = {
        "view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 16},
        "controls": {"showZoom": True, "mouseWheelZoom": True},
        "basemap": {"type": "default", "name": "Basemap"},
        "layers": [
            {
                "type": "markers",
                "name": "Radios",
                "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                "config": {"showLegend": False, "style": {"size": {"fixed": 6}, "text": {"field": "device_id"}}},
            }
        ],
    }
    return dashboard(
        "ew-patrol",
        "Patrol",
        [
            Panel("geomap", "Radios, last position",
                  [Query(f'SELECT last("lat") AS "lat", last("lon") AS "lon", last("battery_pct") AS "battery_pct" '
                         f'FROM "radio" WHERE {S} GROUP BY "device_id"', format="table")],
                  width=16, height=14, options=geomap, now_window=now_window(DeviceType.RADIO)),
            Panel("table", "SOS",
                  [Query(f'SELECT "device_id", "lat", "lon" FROM "radio_event" WHERE "event_type" = \'sos\' AND {S} '
                         f"ORDER BY time DESC LIMIT 50", format="table")],
                  width=8, height=14),
            Panel("timeseries", "Radio battery",
                  [Query(f'SELECT mean("battery_pct") FROM "radio" WHERE {S} GROUP BY {PER}, "device_id"',
                         alias="$tag_device_id")],
                  unit="percent", width=12),
            Panel("timeseries", "Talk time (push-to-talk)",
                  [Query(f'SELECT sum("talk_s") FROM "radio_event" WHERE "event_type" = \'ptt\' AND {S} '
                         f"GROUP BY {PER} fill(0)", alias="talk")],
                  unit="s", width=12),
        ],
        description="Staff radios: where they are, battery, SOS.",
        tags=["patrol"],
        variables=(SITE_VAR,),
        annotations=(alert_annotation("sos"),),
        time_from="now-3h",
        refresh="30s",
    )


BOARDS = {
    "overview": overview,
    "charging": charging,
    "fire-safety": fire_safety,
    "access": access,
    "parking": parking,
    "patrol": patrol,
    "device-health": device_health,
    "alerts": alerts,
    "platform": platform,
}
