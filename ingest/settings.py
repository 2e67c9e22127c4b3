"""Ingest's own settings, on top of the shared ones (``ESTATEWATCH_INGEST_*``)."""

import socket
from pathlib import Path

from pydantic import Field

from ingest.admission import AdmissionSettings
from store.retention import DURATION_PATTERN
from store.series import COMPLETENESS_PERIOD_S, STATS_PERIOD_S


class IngestSettings(AdmissionSettings):
    ingest_batch_size: int = Field(5000, ge=1, le=100_000, description="lines per InfluxDB write, at most")
    ingest_batch_ms: int = Field(100, ge=1, le=60_000, description="longest a reading waits for its batch, ms")
    ingest_writers: int = Field(2, ge=1, le=16, description="InfluxDB writes in flight at once")
    ingest_receive_maximum: int = Field(
        20_000, ge=10, le=65_535, description="unacknowledged messages the broker may send this worker (memory bound)"
    )
    ingest_session_expiry_s: int = Field(3600, ge=0, description="broker keeps the worker's queue this long offline")
    ingest_share_group: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]{0,64}$",
        description="shared subscription group to split the stream over workers; empty: a plain subscription "
        "(one worker; survives broker restarts, which Mosquitto 2.0's shared subscriptions do not)",
    )
    ingest_client_id: str = Field(
        default_factory=lambda: f"ingest-{socket.gethostname()}"[:64],
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="MQTT client id: stable per worker (a restart resumes its session), unique per worker",
    )
    ingest_registry_refresh_s: float = Field(
        30.0, gt=0, le=3600, description="re-read the registry's devices this often, s (at once for an unknown one)"
    )
    ingest_spool_dir: Path | None = Field(
        None, description="disk spool for InfluxDB outages; default RUN_DIR/spool/CLIENT_ID"
    )
    ingest_spool_max_mb: int = Field(1024, ge=1, description="spool size beyond which the worker stops acknowledging")
    ingest_write_timeout_s: float = Field(10.0, gt=0, le=300, description="one InfluxDB write may take this long")
    ingest_spool_after_s: float = Field(2.0, ge=0, le=300, description="retry InfluxDB this long before spooling")
    ingest_metrics_port: int = Field(9102, ge=0, le=65_535, description="/metrics and /healthz port (0: none)")
    ingest_metrics_host: str = Field("127.0.0.1", description="address the metrics port binds")
    ingest_gzip: str = Field("auto", pattern=r"^(auto|on|off)$", description="gzip writes: auto = off on loopback")
    ingest_completeness_s: int = Field(
        COMPLETENESS_PERIOD_S, ge=0, description="ingest_completeness period, s (0: off)"
    )
    ingest_stats_s: float = Field(
        float(STATS_PERIOD_S), ge=0, le=3600, description="period of the ingest_stats points, s (0: off)"
    )
    ingest_reject_budget_per_min: int = Field(
        60,
        ge=1,
        le=1_000_000,
        description="rejects a minute one device may have kept whole (payload stored, dead-letter notice); past it "
        "they are only counted per reason, and the device is reported noisy (the rules' invalid_payloads)",
    )
    ingest_rejects_kept_per_day: int = Field(
        1000, ge=0, description="whole dead letters one device may store in a (UTC) day; past it they are only counted"
    )
    ingest_reject_count_s: float = Field(
        1.0, gt=0, le=60, description="reject counts are written (and those rejects acknowledged) this often, s"
    )
    ingest_rejects_retention: str = Field(
        "30d",
        pattern=DURATION_PATTERN,
        description="how long InfluxDB keeps dead letters and reject counts (retention policy 'rejects'), "
        "e.g. 30d, 12h, INF",
    )
    ingest_notice_queue: int = Field(
        1000, ge=1, le=1_000_000, description="dead-letter notices waiting for the broker; past it they are dropped"
    )
    ingest_quarantine_per_min: int = Field(
        0,
        ge=0,
        description="quarantine a device with this many rejects in one minute: disable its broker client and "
        "its registry entry (0: off; the ingest broker user then needs the dynamic-security admin role)",
    )

    @property
    def spool_dir(self) -> Path:
        return self.ingest_spool_dir or self.run_dir / "spool" / self.ingest_client_id
