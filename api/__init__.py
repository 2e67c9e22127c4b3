"""The HTTP API (FastAPI): devices and their broker credentials, the estate, telemetry, alerts,
and the grid workers' page."""
