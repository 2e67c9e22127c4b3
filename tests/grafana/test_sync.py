"""``estatewatch grafana sync`` against a local HTTP server that answers like Grafana's API and
records every request."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from estatewatch.cli import main
from grafana.boards import BOARDS
from stack.procs import free_port
from tests.support.http_recorder import Recorded, Recorder, http_recorder

TOKEN = "glsa_test_token"


class FakeGrafana:
    """Just enough of Grafana 11's HTTP API: health, data sources by uid, folders, dashboards."""

    def __init__(self) -> None:
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}

    def __call__(self, r: Recorded) -> tuple[int, Any]:
        if r.path == "/api/frontend/settings":  # grafana-client's health check; the login page reads it too
            return 200, {"buildInfo": {"version": "11.3.0", "edition": "Open Source"}}
        if r.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"message": "invalid API key"}
        parts = r.path.removeprefix("/api/").split("/")
        match r.method, parts:
            case "GET", ["datasources", "uid", uid]:
                found = self.datasources.get(uid)
                if found is None:
                    return 404, {"message": "Data source not found"}
                return 200, {k: v for k, v in found.items() if k != "secureJsonData"} | {
                    "secureJsonFields": {k: True for k in found.get("secureJsonData", {})}
                }
            case "POST", ["datasources"]:
                self.datasources[r.body["uid"]] = r.body
                return 200, {"message": "Datasource added", "id": 1}
            case "PUT", ["datasources", "uid", uid]:
                self.datasources[uid] = r.body
                return 200, {"message": "Datasource updated"}
            case "GET", ["folders", uid]:
                return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "folder not found"})
            case "POST", ["folders"]:
                self.folders[r.body["uid"]] = r.body
                return 200, r.body
            case "GET", ["dashboards", "uid", uid]:
                if uid not in self.dashboards:
                    return 404, {"message": "Dashboard not found"}
                return 200, self.dashboards[uid]
            case "POST", ["dashboards", "db"]:
                board = {**r.body["dashboard"], "id": 7, "version": 3}
                self.dashboards[board["uid"]] = {"dashboard": board, "meta": {"folderUid": r.body["folderUid"]}}
                return 200, {"status": "success", "uid": board["uid"]}
        return 404, {"message": f"no route {r.method} {r.path}"}


@pytest.fixture
def grafana() -> Iterator[tuple[Recorder, FakeGrafana]]:
    fake = FakeGrafana()
    with http_recorder(fake) as recorder:
        yield recorder, fake


def run(url: str, token: str = TOKEN, *extra: str) -> Any:
    args = ["grafana", "sync", "--grafana-url", url, "--grafana-token", token, "--grafana-influx-user", "grafana",
            "--grafana-influx-password", "s3cret", *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def writes(recorder: Recorder) -> list[Recorded]:
    return [r for r in recorder.requests if r.method != "GET"]


def test_sync_creates_the_data_source_folder_and_every_board_then_changes_nothing(
    grafana: tuple[Recorder, FakeGrafana],
) -> None:
    recorder, fake = grafana
    first = run(recorder.url)
    assert first.exit_code == 0, first.output
    assert first.output.count("created") == 2 + len(BOARDS)
    source = fake.datasources["estatewatch-influxdb"]
    assert source["type"] == "influxdb" and source["jsonData"] == {
        "version": "InfluxQL", "dbName": "estate", "httpMode": "POST"}  # fmt: skip
    assert source["url"] == "http://influxdb:8086" and source["secureJsonData"] == {"password": "s3cret"}
    assert set(fake.dashboards) == {make()["uid"] for make in BOARDS.values()}
    pushed = [r.body for r in recorder.requests if r.path == "/api/dashboards/db"]
    assert all(p["folderUid"] == "estatewatch" and p["overwrite"] and p["dashboard"]["id"] is None for p in pushed)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in recorder.requests if r.path != "/api/health")

    recorder.requests.clear()
    second = run(recorder.url)
    assert second.exit_code == 0, second.output
    assert writes(recorder) == [], "a second sync must not write anything"
    assert "0 of" in second.output and second.output.count("unchanged") == 2 + len(BOARDS)


def test_sync_updates_only_what_differs(grafana: tuple[Recorder, FakeGrafana]) -> None:
    recorder, fake = grafana
    assert run(recorder.url).exit_code == 0
    fake.dashboards["ew-fire"]["dashboard"]["panels"] = []  # someone edited the board by hand
    fake.datasources["estatewatch-influxdb"]["url"] = "http://old-influx:8086"
    recorder.requests.clear()
    result = run(recorder.url)
    assert result.exit_code == 0, result.output
    assert {(r.method, r.path) for r in writes(recorder)} == {
        ("POST", "/api/dashboards/db"), ("PUT", "/api/datasources/uid/estatewatch-influxdb")}  # fmt: skip
    assert [r.body["dashboard"]["uid"] for r in writes(recorder) if r.path == "/api/dashboards/db"] == ["ew-fire"]
    assert "updated   dashboard Fire safety (ew-fire)" in result.output
    assert fake.datasources["estatewatch-influxdb"]["url"] == "http://influxdb:8086"


def test_a_refused_token_is_a_clear_error(grafana: tuple[Recorder, FakeGrafana]) -> None:
    recorder, _ = grafana
    result = run(recorder.url, "wrong-token")
    assert result.exit_code == 1
    assert "refused the token (401)" in result.output
    assert writes(recorder) == []


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(url)
    assert result.exit_code == 1
    assert f"cannot reach Grafana at {url}" in result.output


def test_no_token_is_refused_before_any_request() -> None:
    result = CliRunner().invoke(main, ["grafana", "sync", "--grafana-url", "http://127.0.0.1:9"], env={
        "ESTATEWATCH_GRAFANA_TOKEN": ""})  # fmt: skip
    assert result.exit_code == 1 and "no Grafana token" in result.output


def test_the_pushed_boards_are_the_files_in_the_repo(grafana: tuple[Recorder, FakeGrafana]) -> None:
    recorder, fake = grafana
    assert run(recorder.url).exit_code == 0
    from grafana.build import DASHBOARDS

    for path in DASHBOARDS.glob("*.json"):
        on_disk = json.loads(path.read_text())
        pushed = fake.dashboards[on_disk["uid"]]["dashboard"]
        assert {k: v for k, v in pushed.items() if k not in ("id", "version")} == {
            k: v for k, v in on_disk.items() if k not in ("id", "version")}  # fmt: skip
