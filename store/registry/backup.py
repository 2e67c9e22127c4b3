"""Backing up and restoring the registry with each database's own consistent-copy tool: SQLite's
online backup API (a snapshot while services keep writing) and pg_dump / pg_restore (a snapshot in
one repeatable-read transaction; restored in one transaction, so a failed restore changes nothing)."""

import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from store.registry.pgtools import ToolMissingError, postgres_binary

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    bytes: int


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory registry cannot be backed up")
    return Path(url.database)


def _libpq(url: URL) -> str:
    """The URL as PostgreSQL's own tools take it (no SQLAlchemy driver name)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    try:
        return postgres_binary(name)
    except ToolMissingError as exc:
        raise BackupError(f"{exc}; with compose, run it in the database's container (docs/registry.md)") from None


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = done.stderr.strip()
        if "server version mismatch" in detail:
            detail += " (use the tools of the server's version: docs/registry.md)"
        raise BackupError(f"{what} failed: {detail[-1500:]}")


def backup(db_url: str, dest: Path) -> BackupReport:
    """A consistent copy of the registry in ``dest`` (written beside it, then renamed: a backup that
    fails leaves no half file under the name)."""
    url = make_url(db_url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    if url.get_backend_name() == "sqlite":
        source = _sqlite_path(url)
        if not source.exists():
            raise BackupError(f"no registry at {source}")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # all pages in one step: one snapshot, whatever writers do meanwhile
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise BackupError(f"backup of {source} failed: {exc}") from exc
        finally:
            src.close()
    elif url.get_backend_name() == "postgresql":
        _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={_libpq(url)}"],
             "pg_dump")  # fmt: skip
    else:
        raise BackupError(f"cannot back up a {url.get_backend_name()} registry")
    partial.replace(dest)
    return BackupReport(dest, dest.stat().st_size)


def kind_of(path: Path) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} is neither a SQLite registry backup nor a pg_dump archive")


def check_kind(db_url: str, src: Path) -> None:
    """Refuse a backup of the other kind before anything touches the registry."""
    restore_kind = kind_of(src)
    backend = make_url(db_url).get_backend_name()
    if restore_kind != backend:
        raise BackupError(f"{src} is a {restore_kind} backup, the registry is {backend}: "
                          "restore it into a registry of its kind")  # fmt: skip


def restore(db_url: str, src: Path, *, has_data: bool) -> None:
    """The backup in ``src`` into the registry at ``db_url``, replacing what is there. Stop the
    services first: they keep what they read in memory. ``has_data`` is only for the message of a
    mismatch; refusing to overwrite is the caller's decision."""
    url = make_url(db_url)
    check_kind(db_url, src)
    kind = url.get_backend_name()
    if kind == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(target.name + ".restoring")
        shutil.copyfile(src, staged)
        check = sqlite3.connect(staged)
        try:
            if check.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise BackupError(f"{src} fails SQLite's integrity check")
        finally:
            check.close()
        for stale in (Path(f"{target}-wal"), Path(f"{target}-shm")):
            stale.unlink(missing_ok=True)
        staged.replace(target)
        return
    _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error",
          f"--dbname={_libpq(url)}", str(src)], "pg_restore")  # fmt: skip
