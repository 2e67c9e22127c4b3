"""Tables. Every estate object is keyed by (site_id, id): ids are the estate file's, unique per site."""

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SiteRow(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    contacts: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)


class GridRow(Base):
    __tablename__ = "grids"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    # Workers and the roster change together and are read together: one document per grid.
    workers: Mapped[list[dict[str, str | None]]] = mapped_column(JSON, default=list)
    roster: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)


class BuildingRow(Base):
    __tablename__ = "buildings"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    grid_id: Mapped[str] = mapped_column(String(64))
    floors: Mapped[int] = mapped_column(Integer)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)


class UnitRow(Base):
    __tablename__ = "units"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    building_id: Mapped[str] = mapped_column(String(64))
    households: Mapped[int] = mapped_column(Integer)


class ZoneRow(Base):
    __tablename__ = "zones"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16))
    grid_id: Mapped[str] = mapped_column(String(64))
    building_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    capacity: Mapped[int] = mapped_column(Integer)
    underground: Mapped[bool] = mapped_column(Boolean)


class DeviceRow(Base):
    __tablename__ = "devices"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    building_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    unit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    floor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    zone_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    vendor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str | None] = mapped_column(String(120), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertRow(Base):
    """An alert: the registry is its source of truth (InfluxDB and MQTT get copies).

    ``*_ts`` are event time (the devices' clock), ``*_ms`` wall-clock time (people's), both ms since
    the epoch: integers compare the same on SQLite and PostgreSQL.
    """

    __tablename__ = "alerts"
    # One open alert per (site, rule, subject): open_key is "rule/subject" while open, NULL after,
    # and NULLs never collide in a unique constraint (SQLite and PostgreSQL alike).
    __table_args__ = (UniqueConstraint("site_id", "open_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    open_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    escalation: Mapped[int] = mapped_column(Integer, default=0)
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_ts: Mapped[int] = mapped_column(BigInteger)  # event time, ms
    last_ts: Mapped[int] = mapped_column(BigInteger, index=True)  # lists are newest first
    resolved_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    grid_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    building_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    unit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    zone_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    ack_escalations: Mapped[int] = mapped_column(Integer, default=0)  # raised for want of an acknowledgement
    opened_at_ms: Mapped[int] = mapped_column(BigInteger)  # wall clock, for ack timers
    # Wall clock when the alert reached its current severity (None: since it opened): a severity's
    # acknowledgement timeouts run from then, not from an opening at a lower severity.
    severity_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acknowledged_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AlertEventRow(Base):
    """The audit trail: who did what to an alert, and when."""

    __tablename__ = "alert_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class NotificationRow(Base):
    """The notifier outbox: one row per message per channel; its key makes a resend impossible."""

    __tablename__ = "notifications"
    # What each channel's publisher asks every second: its pending rows that are due.
    __table_args__ = (Index("ix_notifications_due", "channel", "state", "next_at_ms"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    alert_id: Mapped[int] = mapped_column(Integer, index=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, sent, folded, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at_ms: Mapped[int] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    sent_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class RuleStateRow(Base):
    """A service's checkpoint of state it would otherwise rebuild from months of history."""

    __tablename__ = "rule_state"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class TokenRow(Base):
    """An API token: only its SHA-256 is kept. ``id`` is the token's public prefix (for lookup and
    for logs); ``grids`` limit a grid worker, ``vendor`` a device vendor."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))
    grids: Mapped[list[str]] = mapped_column(JSON, default=list)
    vendor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # None: never expires (tokens made before expiry existed, and admin tokens made with 'never').
    expires_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_used_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DeviceCredentialRow(Base):
    """A device's broker identity: its dynamic-security client (username = client id) and role."""

    __tablename__ = "device_credentials"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(140), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    rotated_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EstateSettingRow(Base):
    """What engineers change at run time (rosters, plate whitelist, fire-lane permits, rule
    overrides): one JSON document per (site, key); services poll ``updated_ms`` to pick changes up."""

    __tablename__ = "estate_settings"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(120))
