"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here)."""

import re
from pathlib import Path
from typing import Any

import click
import yaml

from estatewatch.cli import main
from stack.mosquitto import MAX_PACKET_SIZE, MAX_QUEUED_MESSAGES, MosquittoLayout

ROOT = Path(__file__).parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ONE_SHOT = {"broker-init", "registry-init"}


def test_the_stack_has_its_parts() -> None:
    assert {"mosquitto", "influxdb", "grafana", "postgres", "simulator", "ingest", "rules", "api"} <= SERVICES.keys()
    assert SERVICES["simulator"]["profiles"] == ["sim"]
    assert SERVICES["influxdb"]["image"].startswith("influxdb:1."), "the same v1 API the tests use"
    assert SERVICES["mosquitto"]["image"].startswith("eclipse-mosquitto:2")


def test_long_running_services_have_healthchecks_and_wait_for_healthy_dependencies() -> None:
    for name, svc in SERVICES.items():
        if name not in ONE_SHOT and name != "simulator":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond == {"condition": expected}, f"{name} -> {dep}"
            if expected == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_secrets_come_from_the_environment_and_are_required() -> None:
    checked = 0
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            url_password = re.search(r"://(?:\$\{[^}]*\}|[^:/@]+):(\$\{[^}]*\}|[^@]+)@", value)
            if "PASSWORD" not in key and not url_password:
                continue
            secret = url_password.group(1) if url_password else value
            assert secret.startswith("${"), f"{name}: {key} holds a literal secret"
            for ref, rest in re.findall(r"\$\{(\w+)([^}]*)\}", secret):
                assert rest.startswith(":?"), f"{name}: {key} uses ${{{ref}}} without ':?' (required)"
            checked += 1
    assert checked >= 10


def test_our_services_run_real_cli_commands() -> None:
    for name, svc in SERVICES.items():
        if not str(svc.get("image", "")).startswith("estatewatch"):
            continue
        command = svc["command"]
        group: click.Command = main
        for word in command:
            if word.startswith("-"):
                break
            assert isinstance(group, click.Group) and word in group.commands, f"{name}: no command {command}"
            group = group.commands[word]
        params = {opt for p in group.params for opt in p.opts}
        for word in command:
            if word.startswith("--"):
                assert word in params, f"{name}: {group.name} has no option {word}"


def test_broker_config_matches_the_local_stacks_limits() -> None:
    prod = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    local = MosquittoLayout(Path("/tmp/x"), 1883).render()
    for key, value in (
        ("max_queued_messages", MAX_QUEUED_MESSAGES),
        ("max_packet_size", MAX_PACKET_SIZE),
        ("persistence", "true"),
        ("allow_anonymous", "false"),
        ("max_queued_bytes", 0),
    ):
        line = f"{key} {value}"
        assert re.search(rf"^{line}$", prod, re.M), f"deploy config lacks '{line}'"
        assert re.search(rf"^{line}$", local, re.M), f"local stack config lacks '{line}'"
    assert "plugin_opt_config_file /mosquitto/data/" in prod
    mounts = SERVICES["mosquitto"]["volumes"]
    assert "./deploy/mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mounts


def test_grafana_provisioning_is_mounted() -> None:
    mounts = SERVICES["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    for mount in mounts:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), f"grafana mounts missing {source}"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/estatewatch.yaml").read_text())
    dashboards_target = next(m.split(":")[1] for m in mounts if m.startswith("./grafana/dashboards:"))
    assert provider["providers"][0]["options"]["path"] == dashboards_target


def test_dockerfile_builds_the_project_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    packages = {p.split("*")[0] for p in re.findall(r'"(\w+)\*"', (ROOT / "pyproject.toml").read_text())}
    copied = {Path(s).name for s in re.findall(r"^COPY (\S+) ", text, re.M)}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert 'ENTRYPOINT ["estatewatch"]' in text


def test_the_registry_is_migrated_before_any_service_opens_it() -> None:
    """Services refuse a registry older than their release: compose's one-shot upgrades it first
    and every service that opens the registry waits for that one-shot to succeed."""
    assert SERVICES["registry-init"]["command"][:3] == ["registry", "init", "--upgrade"]
    assert SERVICES["registry-init"]["environment"]["ESTATEWATCH_DB_URL"].startswith("postgresql+asyncpg://")
    for name in ("ingest", "rules", "api"):
        assert SERVICES[name]["depends_on"]["registry-init"] == {"condition": "service_completed_successfully"}, name
