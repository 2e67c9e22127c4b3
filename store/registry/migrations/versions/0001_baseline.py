"""Baseline: the registry's schema as release 0.1 made it, with no migration tool.

Revision ID: 0001
Revises:
Create Date: 2026-12-03

An empty database gets every table. A registry made before migrations existed (the tables are
there, no alembic_version) is brought to this baseline instead: tables added by later 0.1 builds
are created, the nullable columns they added are added (NULL keeps their meaning: a token without
``expires_ms`` never expires), and the indexes they added are built. Anything else that differs
(a missing NOT NULL column) cannot be repaired blindly and stops the upgrade with its name.

The tables are written out here, not imported from the models: the models move on, a migration
must keep describing the schema of its day.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Checked before any downgrade runs (store/registry/migrate.py).
IRREVERSIBLE = "below the baseline there is no schema: downgrading would drop every table"


def _tables() -> sa.MetaData:
    m = sa.MetaData()
    s64, s120 = sa.String(64), sa.String(120)
    sa.Table(
        "sites", m,
        sa.Column("id", s64, primary_key=True),
        sa.Column("name", s120, nullable=False),
        sa.Column("timezone", s64, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
        sa.Column("contacts", sa.JSON, nullable=False),
    )
    sa.Table(
        "grids", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("id", s64, primary_key=True),
        sa.Column("name", s120, nullable=False),
        sa.Column("workers", sa.JSON, nullable=False),
        sa.Column("roster", sa.JSON, nullable=False),
    )
    sa.Table(
        "buildings", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("id", s64, primary_key=True),
        sa.Column("name", s120, nullable=False),
        sa.Column("grid_id", s64, nullable=False),
        sa.Column("floors", sa.Integer, nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
    )
    sa.Table(
        "units", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("id", s64, primary_key=True),
        sa.Column("building_id", s64, nullable=False),
        sa.Column("households", sa.Integer, nullable=False),
    )
    sa.Table(
        "zones", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("id", s64, primary_key=True),
        sa.Column("name", s120, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("grid_id", s64, nullable=False),
        sa.Column("building_id", s64, nullable=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("underground", sa.Boolean, nullable=False),
    )
    sa.Table(
        "devices", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("id", s64, primary_key=True),
        sa.Column("type", sa.String(32), nullable=False, index=True),
        sa.Column("building_id", s64, nullable=True),
        sa.Column("unit_id", s64, nullable=True),
        sa.Column("floor", sa.Integer, nullable=True),
        sa.Column("zone_id", s64, nullable=True),
        sa.Column("interval_s", sa.Integer, nullable=False),
        sa.Column("vendor", s64, nullable=True),
        sa.Column("label", s120, nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    sa.Table(
        "alerts", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site_id", s64, nullable=False, index=True),
        sa.Column("rule", s64, nullable=False, index=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("open_key", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("escalation", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_ts", sa.BigInteger, nullable=False),
        sa.Column("last_ts", sa.BigInteger, nullable=False, index=True),
        sa.Column("resolved_ts", sa.BigInteger, nullable=True),
        sa.Column("grid_id", s64, nullable=True, index=True),
        sa.Column("building_id", s64, nullable=True),
        sa.Column("unit_id", s64, nullable=True),
        sa.Column("zone_id", s64, nullable=True),
        sa.Column("assignee", s64, nullable=True),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("ack_escalations", sa.Integer, nullable=False),
        sa.Column("opened_at_ms", sa.BigInteger, nullable=False),
        sa.Column("severity_at_ms", sa.BigInteger, nullable=True),
        sa.Column("acknowledged_at_ms", sa.BigInteger, nullable=True),
        sa.Column("resolved_at_ms", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("site_id", "open_key"),
    )
    sa.Table(
        "alert_events", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", s120, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    sa.Table(
        "notifications", m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("channel", s64, nullable=False, index=True),
        sa.Column("alert_id", sa.Integer, nullable=False, index=True),
        sa.Column("message", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at_ms", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("sent_at_ms", sa.BigInteger, nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
    )
    sa.Table(
        "rule_state", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("key", s64, primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "api_tokens", m,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", s120, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("grids", sa.JSON, nullable=False),
        sa.Column("vendor", s64, nullable=True),
        sa.Column("secret_sha256", s64, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("last_used_ms", sa.BigInteger, nullable=True),
    )
    sa.Table(
        "device_credentials", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("device_id", s64, primary_key=True),
        sa.Column("username", sa.String(140), nullable=False, unique=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("rotated_ms", sa.BigInteger, nullable=True),
    )
    sa.Table(
        "estate_settings", m,
        sa.Column("site_id", s64, primary_key=True),
        sa.Column("key", s64, primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_by", s120, nullable=False),
    )
    return m


def upgrade() -> None:
    bind = op.get_bind()
    tables = _tables()
    present = sa.inspect(bind)
    existing = [t for t in tables.sorted_tables if present.has_table(t.name)]
    for table in existing:
        have = {c["name"] for c in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"the registry's table {table.name} lacks the column {column.name}, which a registry of any "
                    "0.1 build has: this is not an EstateWatch registry, or it was edited by hand"
                )
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        indexed = {i["name"] for i in present.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                op.create_index(index.name, table.name, [c.name for c in index.columns])
    # Missing tables, with their indexes (all of them on an empty database).
    tables.create_all(bind, tables=[t for t in tables.sorted_tables if t not in existing])


def downgrade() -> None:
    from store.registry.migrate import IrreversibleError

    raise IrreversibleError(IRREVERSIBLE)
