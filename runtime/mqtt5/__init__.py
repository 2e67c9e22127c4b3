"""An MQTT 5 client of the project's own for the consuming services (see client.py for why)."""
