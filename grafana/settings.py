"""``estatewatch grafana sync``'s settings (``ESTATEWATCH_GRAFANA_*``)."""

from pydantic import Field

from runtime.settings import Settings


class GrafanaSettings(Settings):
    grafana_url: str = Field("http://127.0.0.1:3000", pattern=r"^https?://", description="Grafana to push into")
    grafana_token: str = Field("", description="a Grafana service-account token (Editor; Admin for data sources)")
    grafana_influx_url: str = Field(
        "http://influxdb:8086", pattern=r"^https?://", description="InfluxDB as Grafana's server reaches it"
    )
    grafana_influx_user: str = Field("", description="InfluxDB user for Grafana's data source (read-only)")
    grafana_influx_password: str = Field("", description="its password (sent only when the data source is created)")
