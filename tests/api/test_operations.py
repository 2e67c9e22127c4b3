"""Health, readiness, metrics, request logs without secrets, and the tokens command line."""

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from estatewatch.cli import main
from stack.procs import free_port
from tests.support.api import RunningApi, Tokens, api_settings, running_api
from tests.support.servers import PASSWORD, Broker, InfluxServer


async def test_health_ready_and_metrics(api: RunningApi, tokens: Tokens) -> None:
    async with api.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True, "influxdb": True,
                                                                        "registry": True}  # fmt: skip
    async with api.client(tokens.admin) as c:
        await c.get("/api/v1/sites")
    async with api.client() as c:
        text = (await c.get("/metrics")).text
    assert 'api_requests_total{route="/api/v1/sites",status="200"} 1.0' in text
    assert "api_request_seconds_bucket" in text and "api_mqtt_connected 1.0" in text


async def test_readiness_names_what_is_away(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path
) -> None:
    settings = api_settings(broker, f"http://127.0.0.1:{free_port()}", influx_db, registry_url, tmp_path,
                            api_broker_timeout_s=1)  # fmt: skip
    broker.stop()
    async with running_api(settings) as api, api.client() as c:
        r = await c.get("/readyz")
        assert (await c.get("/healthz")).status_code == 200
    assert r.status_code == 503
    assert r.json()["checks"] == {"broker": False, "influxdb": False, "registry": True}


async def test_a_dead_background_task_fails_health_and_stops_the_server(
    broker: Broker, influxd: InfluxServer, influx_db: str, registry_url: str, tmp_path: Path
) -> None:
    """The API's broker connection is a task of its service: if it dies, /healthz says so and the
    server stops (``estatewatch api`` then exits 1) rather than serving on without alert changes."""
    import asyncio

    import paho.mqtt.publish

    settings = api_settings(broker, influxd.url, influx_db, registry_url, tmp_path)

    def broken(topic: str, payload: bytes) -> None:
        raise ValueError("a bug in the last-value cache")

    def a_reading_arrives() -> None:
        paho.mqtt.publish.single(
            "estate/v1/small/smoke_sensor/smk-1/telemetry", b"{}", qos=1, port=broker.port,
            auth={"username": "service", "password": PASSWORD},
        )  # fmt: skip

    for stop_on_failure in (False, True):
        async with running_api(settings, stop_on_failure=stop_on_failure) as api, api.client() as c:
            assert (await c.get("/healthz")).status_code == 200
            api.state.broker.on_telemetry = broken
            await asyncio.to_thread(a_reading_arrives)
            if stop_on_failure:  # the server stops by itself (or the test times out)
                await asyncio.wait_for(asyncio.shield(api.server), 30)
            else:
                await asyncio.wait_for(api.app.state.service.wait(), 30)
                health = await c.get("/healthz")
                assert health.status_code == 503
                assert health.json() == {"status": "failing", "problem": "task mqtt has stopped"}
        failed = api.app.state.service.failed
        assert failed is not None and failed.task == "mqtt" and isinstance(failed.error, ValueError)


async def test_requests_are_logged_without_tokens_or_query_values(
    api: RunningApi, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="estatewatch.api.access")
    async with api.client(tokens.admin) as c:
        await c.get("/api/v1/alerts", params={"building": "b001-secret-plate"})
    lines = [r.getMessage() for r in caplog.records if r.name == "estatewatch.api.access"]
    assert any(line.startswith("GET /api/v1/alerts 200") for line in lines)
    joined = "\n".join(lines)
    assert tokens.admin not in joined and "secret-plate" not in joined and "ew_" not in joined


def test_tokens_command_creates_lists_and_revokes(registry_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"ESTATEWATCH_DB_URL": registry_url}
    out = tmp_path / "admin.token"
    made = runner.invoke(main, ["tokens", "create", "--role", "admin", "--name", "first", "--out", str(out)], env=env)
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    assert token.startswith("ew_") and out.read_text().strip() == token and out.stat().st_mode & 0o777 == 0o600
    bad = runner.invoke(main, ["tokens", "create", "--role", "grid_worker", "--name", "x"], env=env)
    assert bad.exit_code == 1 and "needs at least one grid" in bad.output
    listed = runner.invoke(main, ["tokens", "list"], env=env)
    token_id = token.split("_")[1]
    assert token_id in listed.output and "active" in listed.output and token.split("_", 2)[2] not in listed.output
    assert runner.invoke(main, ["tokens", "revoke", token_id], env=env).exit_code == 0
    assert "revoked" in runner.invoke(main, ["tokens", "list"], env=env).output
