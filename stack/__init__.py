"""The local stack: Mosquitto and influxd from Debian packages, with project-local config and data."""
