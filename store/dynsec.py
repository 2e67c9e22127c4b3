"""Mosquitto dynamic-security: the roles of the platform's own clients, and the plugin's JSON file.

The file is written before the broker's first start (the plugin reads it at start and owns it after);
live changes go through ``$CONTROL/dynamic-security/v1``.
"""

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Mosquitto 2.0 hashes with PBKDF2-SHA512, 101 rounds, a 12-byte salt (what mosquitto_ctrl writes).
_ITERATIONS = 101


@dataclass(frozen=True)
class Acl:
    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0


@dataclass(frozen=True)
class Role:
    name: str
    acls: tuple[Acl, ...]


@dataclass(frozen=True)
class Client:
    username: str
    password: str
    roles: tuple[str, ...]
    text_name: str = ""
    client_id: str | None = None


@dataclass
class DynsecFile:
    roles: list[Role] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)

    def write(self, path: Path) -> None:
        doc: dict[str, Any] = {
            "clients": [_client_json(c) for c in self.clients],
            "roles": [
                {
                    "rolename": r.name,
                    "acls": [
                        {"acltype": a.acltype, "topic": a.topic, "allow": a.allow, "priority": a.priority}
                        for a in r.acls
                    ],
                }
                for r in self.roles
            ],
            "groups": [],
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": True,
                "subscribe": False,
                "unsubscribe": True,
            },
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.chmod(0o600)
        tmp.replace(path)


def _client_json(c: Client) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", c.password.encode(), salt, _ITERATIONS)
    doc: dict[str, Any] = {
        "username": c.username,
        "textName": c.text_name,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _ITERATIONS,
        "roles": [{"rolename": r} for r in c.roles],
    }
    if c.client_id:
        doc["clientid"] = c.client_id
    return doc


def _access(*filters: str, publish: tuple[str, ...] = ()) -> tuple[Acl, ...]:
    acls = [Acl("subscribePattern", f) for f in filters]
    acls += [Acl("publishClientSend", t) for t in publish]
    return tuple(acls)


DYNSEC_ADMIN_ROLE = Role(
    "admin",
    (
        Acl("publishClientSend", "$CONTROL/dynamic-security/#"),
        Acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
        Acl("subscribePattern", "$CONTROL/dynamic-security/#"),
        Acl("subscribePattern", "$SYS/#"),
    ),
)
# Platform services read every device topic (also through shared subscriptions) and publish
# dead letters, alerts and device commands; they are trusted parts of the platform.
SERVICE_ROLE = Role("service", _access("estate/v1/#", "$share/+/estate/v1/#", "$SYS/#", publish=("estate/v1/#",)))
# The simulator plays every device; per-device credentials are for real devices.
SIMULATOR_ROLE = Role("simulator", _access("estate/v1/+/+/+/command", publish=("estate/v1/#",)))


# Lets a container healthcheck see that the broker answers, and nothing else.
HEALTHCHECK_ROLE = Role("healthcheck", _access("$SYS/broker/uptime"))

# The platform's own broker users and their roles; devices get one user each through the API.
PLATFORM_USERS: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "ingest": ("service",),
    "rules": ("service",),
    # The API provisions devices: it talks to dynamic security as its own admin client.
    "api": ("service", "admin"),
    "simulator": ("simulator",),
    "healthcheck": ("healthcheck",),
}


def platform_dynsec(passwords: dict[str, str]) -> DynsecFile:
    """The dynsec file a new broker starts with: the platform's roles and users."""
    missing = sorted(PLATFORM_USERS.keys() - passwords.keys())
    if missing:
        raise ValueError(f"no password for broker user(s): {', '.join(missing)}")
    return DynsecFile(
        roles=[DYNSEC_ADMIN_ROLE, SERVICE_ROLE, SIMULATOR_ROLE, HEALTHCHECK_ROLE],
        clients=[
            Client(user, passwords[user], roles, text_name=f"estatewatch {user}")
            for user, roles in PLATFORM_USERS.items()
        ],
    )


def new_password() -> str:
    return secrets.token_urlsafe(24)
