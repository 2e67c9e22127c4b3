"""The API's settings (``ESTATEWATCH_API_*``), on top of the shared ones."""

from pydantic import Field

from ingest.admission import AdmissionSettings


class ApiSettings(AdmissionSettings):
    """HTTP ingest judges readings as ingest does: ingest's admission settings are the API's too."""

    api_host: str = Field("127.0.0.1", description="address the API binds")
    api_port: int = Field(8080, ge=1, le=65_535, description="port the API listens on")
    api_keep_alive_s: int = Field(
        75, ge=1, le=3600, description="idle keep-alive connections are closed after this (longer than clients poll)"
    )
    api_client_id: str = Field(
        "api", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the API's MQTT client id (one per API process)"
    )
    api_token_cache_s: float = Field(
        10.0, ge=0, le=300, description="how long a verified token is trusted without the registry (revocation delay)"
    )
    api_query_timeout_s: float = Field(10.0, gt=0, le=120, description="longest an InfluxDB query may take")
    api_max_points: int = Field(10_000, ge=100, le=1_000_000, description="most rows one telemetry request returns")
    api_broker_timeout_s: float = Field(
        5.0, gt=0, le=60, description="longest the broker may take to acknowledge a publish or a dynsec command"
    )
    api_device_cache_s: float = Field(
        5.0, ge=0, le=300, description="device list kept in memory this long (other APIs' changes show after it)"
    )
    api_alert_cache_s: float = Field(
        30.0, ge=0, le=600, description="alert lists are answered from memory until an alert changes, at most this long"
    )
    api_device_online_s: int = Field(
        3, ge=1, le=100, description="a device is online while its last message is within this many intervals"
    )
