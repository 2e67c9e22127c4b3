-- The registry's schema as EstateWatch 5a426ad made it (Base.metadata.create_all, no migrations),
-- compiled for sqlite: what upgrades start from. Generated once from that commit's models; do not edit.

CREATE TABLE alerts (
	id INTEGER NOT NULL, 
	site_id VARCHAR(64) NOT NULL, 
	rule VARCHAR(64) NOT NULL, 
	subject VARCHAR(128) NOT NULL, 
	open_key VARCHAR(200), 
	state VARCHAR(16) NOT NULL, 
	severity VARCHAR(16) NOT NULL, 
	title VARCHAR(300) NOT NULL, 
	escalation INTEGER NOT NULL, 
	count INTEGER NOT NULL, 
	first_ts BIGINT NOT NULL, 
	last_ts BIGINT NOT NULL, 
	resolved_ts BIGINT, 
	grid_id VARCHAR(64), 
	building_id VARCHAR(64), 
	unit_id VARCHAR(64), 
	zone_id VARCHAR(64), 
	assignee VARCHAR(64), 
	recipients JSON NOT NULL, 
	evidence JSON NOT NULL, 
	ack_escalations INTEGER NOT NULL, 
	opened_at_ms BIGINT NOT NULL, 
	severity_at_ms BIGINT, 
	acknowledged_at_ms BIGINT, 
	resolved_at_ms BIGINT, 
	PRIMARY KEY (id), 
	UNIQUE (site_id, open_key)
);

CREATE INDEX ix_alerts_grid_id ON alerts (grid_id);

CREATE INDEX ix_alerts_last_ts ON alerts (last_ts);

CREATE INDEX ix_alerts_rule ON alerts (rule);

CREATE INDEX ix_alerts_site_id ON alerts (site_id);

CREATE INDEX ix_alerts_state ON alerts (state);

CREATE TABLE api_tokens (
	id VARCHAR(32) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	grids JSON NOT NULL, 
	vendor VARCHAR(64), 
	secret_sha256 VARCHAR(64) NOT NULL, 
	created_ms BIGINT NOT NULL, 
	revoked_ms BIGINT, 
	expires_ms BIGINT, 
	last_used_ms BIGINT, 
	PRIMARY KEY (id)
);

CREATE TABLE buildings (
	site_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	grid_id VARCHAR(64) NOT NULL, 
	floors INTEGER NOT NULL, 
	lat FLOAT NOT NULL, 
	lon FLOAT NOT NULL, 
	PRIMARY KEY (site_id, id)
);

CREATE TABLE device_credentials (
	site_id VARCHAR(64) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	username VARCHAR(140) NOT NULL, 
	created_ms BIGINT NOT NULL, 
	rotated_ms BIGINT, 
	PRIMARY KEY (site_id, device_id), 
	UNIQUE (username)
);

CREATE TABLE devices (
	site_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	type VARCHAR(32) NOT NULL, 
	building_id VARCHAR(64), 
	unit_id VARCHAR(64), 
	floor INTEGER, 
	zone_id VARCHAR(64), 
	interval_s INTEGER NOT NULL, 
	vendor VARCHAR(64), 
	label VARCHAR(120), 
	enabled BOOLEAN NOT NULL, 
	created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, 
	PRIMARY KEY (site_id, id)
);

CREATE INDEX ix_devices_type ON devices (type);

CREATE TABLE estate_settings (
	site_id VARCHAR(64) NOT NULL, 
	"key" VARCHAR(64) NOT NULL, 
	value JSON NOT NULL, 
	updated_ms BIGINT NOT NULL, 
	updated_by VARCHAR(120) NOT NULL, 
	PRIMARY KEY (site_id, "key")
);

CREATE TABLE grids (
	site_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	workers JSON NOT NULL, 
	roster JSON NOT NULL, 
	PRIMARY KEY (site_id, id)
);

CREATE TABLE notifications (
	id INTEGER NOT NULL, 
	"key" VARCHAR(200) NOT NULL, 
	channel VARCHAR(64) NOT NULL, 
	alert_id INTEGER NOT NULL, 
	message JSON NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_at_ms BIGINT NOT NULL, 
	created_at_ms BIGINT NOT NULL, 
	sent_at_ms BIGINT, 
	error VARCHAR(500), 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE INDEX ix_notifications_alert_id ON notifications (alert_id);

CREATE INDEX ix_notifications_channel ON notifications (channel);

CREATE INDEX ix_notifications_state ON notifications (state);

CREATE TABLE rule_state (
	site_id VARCHAR(64) NOT NULL, 
	"key" VARCHAR(64) NOT NULL, 
	value JSON NOT NULL, 
	updated_ms BIGINT NOT NULL, 
	PRIMARY KEY (site_id, "key")
);

CREATE TABLE sites (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	timezone VARCHAR(64) NOT NULL, 
	lat FLOAT NOT NULL, 
	lon FLOAT NOT NULL, 
	contacts JSON NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE units (
	site_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	building_id VARCHAR(64) NOT NULL, 
	households INTEGER NOT NULL, 
	PRIMARY KEY (site_id, id)
);

CREATE TABLE zones (
	site_id VARCHAR(64) NOT NULL, 
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	grid_id VARCHAR(64) NOT NULL, 
	building_id VARCHAR(64), 
	capacity INTEGER NOT NULL, 
	underground BOOLEAN NOT NULL, 
	PRIMARY KEY (site_id, id)
);

CREATE TABLE alert_events (
	id INTEGER NOT NULL, 
	alert_id INTEGER NOT NULL, 
	at_ms BIGINT NOT NULL, 
	actor VARCHAR(120) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	detail JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(alert_id) REFERENCES alerts (id) ON DELETE CASCADE
);

CREATE INDEX ix_alert_events_alert_id ON alert_events (alert_id);
