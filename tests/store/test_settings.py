import pytest

from runtime.settings import Settings, SettingsError, load_settings, parse_mqtt_url

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("MQTT_URL", "INFLUX_URL", "INFLUX_DATABASE", "DB_URL", "ESTATE_FILE"):
        monkeypatch.delenv(f"ESTATEWATCH_{k}", raising=False)
    s = load_settings(Settings)
    assert s.influx_database == "estate"
    assert s.db_url.startswith("sqlite+aiosqlite:///")
    assert s.mqtt.host == "127.0.0.1"


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTATEWATCH_INFLUX_DATABASE", "from_env")
    assert load_settings(Settings).influx_database == "from_env"
    assert load_settings(Settings, influx_database="from_flag").influx_database == "from_flag"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("mqtt_url", "tcp://x", "ESTATEWATCH_MQTT_URL (--mqtt-url)"),
        ("mqtt_url", "mqtt://host:99999", "ESTATEWATCH_MQTT_URL (--mqtt-url)"),
        ("influx_url", "127.0.0.1:8086", "ESTATEWATCH_INFLUX_URL (--influx-url)"),
        ("influx_database", "bad name;", "ESTATEWATCH_INFLUX_DATABASE (--influx-database)"),
        ("db_url", "sqlite:///x.db", "ESTATEWATCH_DB_URL (--db-url)"),
    ],
)
def test_bad_settings_name_the_variable_and_flag(field: str, value: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings(Settings, **{field: value})


def test_mqtt_url_parts() -> None:
    t = parse_mqtt_url("mqtt://ingest:p%40ss@broker:1884")
    assert (t.host, t.port, t.username, t.password, t.tls) == ("broker", 1884, "ingest", "p@ss", False)
    assert parse_mqtt_url("mqtts://b").port == 8883
    assert "p@ss" not in t.url()
