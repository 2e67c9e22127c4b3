"""``estatewatch grafana sync``: the data source, a folder and the boards pushed into a running
Grafana that is not provisioned from files, with grafana-client. Idempotent: what already matches is
left alone, and the report says what was created, updated or unchanged.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from grafana.boards import BOARDS
from grafana.model import DATASOURCE

FOLDER_UID = "estatewatch"
FOLDER_TITLE = "EstateWatch"
DATASOURCE_NAME = "EstateWatch InfluxDB"
# Fields Grafana adds or bumps on its own copy; left out when comparing.
_SERVER_FIELDS = ("id", "version")


class SyncError(Exception):
    """A Grafana the command cannot use, said in words a person can act on."""


@dataclass(frozen=True)
class InfluxSource:
    url: str
    database: str
    user: str = ""
    password: str = ""

    def body(self, with_password: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": DATASOURCE_NAME,
            "uid": DATASOURCE["uid"],
            "type": "influxdb",
            "access": "proxy",
            "url": self.url,
            "user": self.user,
            "database": self.database,
            "isDefault": True,
            "jsonData": {"version": "InfluxQL", "dbName": self.database, "httpMode": "POST"},
        }
        if with_password and self.password:
            out["secureJsonData"] = {"password": self.password}
        return out


@dataclass
class Report:
    changes: list[tuple[str, str]] = field(default_factory=list)  # (what, created|updated|unchanged)

    def add(self, what: str, outcome: str) -> None:
        self.changes.append((what, outcome))

    def lines(self) -> list[str]:
        return [f"{outcome:<9} {what}" for what, outcome in self.changes]

    @property
    def changed(self) -> int:
        return sum(1 for _, outcome in self.changes if outcome != "unchanged")


def _missing(call: Callable[[], Any]) -> Any | None:
    """The answer, or None where Grafana says 404."""
    try:
        return call()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _dashboard(api: GrafanaApi, uid: str) -> Any | None:
    return _missing(lambda: api.dashboard.get_dashboard(uid))


def _comparable(board: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in board.items() if k not in _SERVER_FIELDS}


def _sync(api: GrafanaApi, source: InfluxSource, report: Report) -> None:
    uid = DATASOURCE["uid"]
    existing = _missing(lambda: api.datasource.get_datasource_by_uid(uid))
    if existing is None:
        api.datasource.create_datasource(source.body(with_password=True))
        report.add(f"data source {DATASOURCE_NAME} ({uid})", "created")
    else:
        wanted = source.body(with_password=False)
        differs = any(existing.get(k) != v for k, v in wanted.items() if k != "jsonData") or any(
            (existing.get("jsonData") or {}).get(k) != v for k, v in wanted["jsonData"].items()
        )
        no_password = source.password and not (existing.get("secureJsonFields") or {}).get("password")
        if differs or no_password:
            api.datasource.update_datasource_by_uid(uid, source.body(with_password=True))
            report.add(f"data source {DATASOURCE_NAME} ({uid})", "updated")
        else:
            report.add(f"data source {DATASOURCE_NAME} ({uid})", "unchanged")

    if _missing(lambda: api.folder.get_folder(FOLDER_UID)) is None:
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.add(f"folder {FOLDER_TITLE}", "created")
    else:
        report.add(f"folder {FOLDER_TITLE}", "unchanged")

    for make in BOARDS.values():
        board = make()
        what = f"dashboard {board['title']} ({board['uid']})"
        current = _dashboard(api, board["uid"])
        if current is not None:
            same_board = _comparable(current.get("dashboard") or {}) == _comparable(board)
            if same_board and (current.get("meta") or {}).get("folderUid") == FOLDER_UID:
                report.add(what, "unchanged")
                continue
        api.dashboard.update_dashboard(
            {
                "dashboard": {**board, "id": None},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "estatewatch grafana sync",
            }
        )
        report.add(what, "created" if current is None else "updated")


def sync(url: str, token: str, source: InfluxSource, timeout_s: float = 10.0) -> Report:
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = Report()
    try:
        api.health.check()
        _sync(api, source, report)
    except niquests.exceptions.ConnectionError as exc:
        raise SyncError(f"cannot reach Grafana at {url}: {exc}") from exc
    except (niquests.exceptions.Timeout, GrafanaTimeoutError) as exc:
        raise SyncError(f"Grafana at {url} did not answer within {timeout_s:.0f} s") from exc
    except GrafanaUnauthorizedError as exc:
        raise SyncError(f"Grafana at {url} refused the token (401): check --token") from exc
    except GrafanaException as exc:
        if exc.status_code == 403:
            raise SyncError(
                f"Grafana at {url} forbids this token to {exc.message or 'do this'} (403): "
                "the service account needs the Editor role (Admin to create data sources)"
            ) from exc
        raise SyncError(f"Grafana at {url} answered {exc.status_code}: {exc.message}") from exc
    return report
