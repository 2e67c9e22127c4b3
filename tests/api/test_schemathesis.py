"""Schemathesis over the OpenAPI document, against the API served for real on a seeded registry:
no 5xx, and every response matches its declared status, content type and schema."""

import asyncio
import sys
from pathlib import Path

import pytest

from tests.api.test_authorization import _setup
from tests.support.api import RunningApi, Tokens

# On SQLite and on PostgreSQL: what the registry's constraints and locking decide is tested here.
pytestmark = pytest.mark.both_registries


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    api: RunningApi, tokens: Tokens, registry_url: str, registry_backend: str, tmp_path: Path
) -> None:
    await _setup(api, tokens, registry_url)
    report = tmp_path / "schemathesis.xml"
    # On PostgreSQL the writes: what it checks that SQLite does not (VARCHAR lengths, constraints)
    # is in what requests store; the reads it serves the same, and they are fuzzed on SQLite.
    writes = ["--include-method-regex", "^(POST|PUT|PATCH|DELETE)$"] if registry_backend == "postgresql" else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli", "run", f"{api.url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {tokens.admin}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--exclude-operation-id", "streamAlerts",  # an endless stream; tested in test_alerts
        *writes,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25",
        "--seed", "1",
        "--generation-database", "none",
        "--report", "junit", "--report-junit-path", str(report),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
