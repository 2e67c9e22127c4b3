"""What every EstateWatch service runs on: settings, logs, health, the MQTT connection, and one
``serve()`` that owns signals, a TaskGroup of named tasks, the drain deadline and the exit code."""
