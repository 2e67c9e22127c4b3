"""The rules service's own settings, on top of the shared ones (``ESTATEWATCH_RULES_*``)."""

import socket
from pathlib import Path

from pydantic import Field

from runtime.settings import Settings
from store.alert_copies import OPEN_PERIOD_S


class RulesSettings(Settings):
    rules_config: Path | None = Field(None, description="rules YAML merged over the shipped defaults")
    rules_client_id: str = Field(
        default_factory=lambda: f"rules-{socket.gethostname()}"[:64],
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="MQTT client id: stable, so a restart resumes the broker session",
    )
    rules_share_group: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]{0,64}$",
        description="shared subscription group (a standby engine); empty: a plain subscription, which "
        "survives broker restarts",
    )
    rules_session_expiry_s: int = Field(3600, ge=0, description="broker keeps the engine's queue this long offline")
    rules_rebuild_s: int = Field(
        3600, ge=0, le=86_400 * 7, description="on start, replay this much history from InfluxDB into the rules"
    )
    rules_checkpoint_s: float = Field(
        60.0, gt=0, description="how often weeks of plate state are checkpointed to the registry"
    )
    rules_open_counts_s: float = Field(
        float(OPEN_PERIOD_S),
        ge=0,
        description="period of the boards' now series (alerts_open: open alerts per rule and grid; "
        "devices_now: devices reporting per type and grid), s (0: off)",
    )
    rules_series_write_s: float = Field(
        10.0, gt=0, le=600, description="how often the engine's per-building minutes (charging_load, smoke_signal) "
        "are written to InfluxDB, s",
    )
    rules_settings_poll_s: float = Field(
        10.0, gt=0, le=3600, description="how often run-time settings (API: whitelist, permits, rosters) are checked"
    )
    rules_escalation_check_s: float = Field(10.0, gt=0, description="how often unacknowledged alerts are checked")
    rules_metrics_port: int = Field(9103, ge=0, le=65_535, description="/metrics and /healthz port (0: none)")
    rules_metrics_host: str = Field("127.0.0.1", description="address the metrics port binds")
