"""The last-value cache's rules: newest wins, far-future stamps are refused, bad messages ignored,
and when memory can answer for a time window without InfluxDB."""

import json
import time

from api.last_values import LastValue, LastValues

NOW = int(time.time() * 1000)
TOPIC = "estate/v1/small/smoke_sensor/smk-1/telemetry"


def reading(ts: int, temp: float = 21.0) -> bytes:
    return json.dumps({"ts": ts, "seq": 1, "state": "normal", "smoke_obscuration_pct": 0.1, "temp_c": temp,
                       "battery_pct": 90, "rssi_dbm": -70}).encode()  # fmt: skip


def test_the_newest_reading_wins_and_the_future_is_refused() -> None:
    lvc = LastValues(future_ms=300_000)
    lvc.on_message(TOPIC, reading(NOW - 1000, 20.0))
    lvc.on_message(TOPIC, reading(NOW - 5000, 19.0))  # late: older than what is kept
    lvc.on_message(TOPIC, reading(NOW + 3_600_000, 99.0))  # a wrong clock an hour ahead
    lvc.on_message(TOPIC, b"{broken")
    lvc.on_message("estate/v1/small/smoke_sensor/smk-1/event", reading(NOW))
    value = lvc.get(("small", "smk-1"))
    assert value is not None and value.ts == NOW - 1000 and value.fields["temp_c"] == 20.0
    assert "seq" in value.fields and "ts" not in value.fields


def test_a_chargers_port_is_a_tag() -> None:
    lvc = LastValues()
    body = [{"ts": NOW, "seq": 1, "port": 2, "state": "charging", "voltage_v": 220.0, "current_a": 2.0,
             "power_w": 440.0, "energy_wh": 10.0, "temp_c": 30.0}]  # fmt: skip
    lvc.on_message("estate/v1/small/ev_charger/chg-1/telemetry", json.dumps(body).encode())
    value = lvc.get(("small", "chg-1"))
    assert value is not None and value.tags == {"port": "2"} and "port" not in value.fields


def test_memory_answers_a_window_once_it_was_looked_up_back_to_there() -> None:
    lvc = LastValues()
    key = ("small", "smk-1")
    day_ago = NOW - 86_400_000
    assert lvc.unknown([key], day_ago) == [key]
    lvc.learned([key], day_ago)  # InfluxDB had nothing in the last day
    assert lvc.unknown([key], day_ago + 1000) == []
    assert lvc.unknown([key], day_ago - 1000) == [key], "a longer window needs another look-up"
    lvc.offer(key, LastValue(NOW - 10, {}, {"temp_c": 1.0}))
    assert lvc.unknown([key], day_ago - 10**9) == [], "a reading inside the window answers any window"
    lvc.forget_known()  # the broker connection was lost: a newer reading may have passed unseen
    assert lvc.unknown([key], NOW - 10**6) == [key]
    lvc.learned([key], NOW - 10**6)
    assert lvc.unknown([key], NOW - 10**6) == []
