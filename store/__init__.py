"""Shared plumbing: settings, the registry database, the InfluxDB client, MQTT connection details."""
