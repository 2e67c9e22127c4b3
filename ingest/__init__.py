"""Ingest: MQTT readings into InfluxDB, each stored once, through faults and bad input."""
