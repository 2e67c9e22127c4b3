"""Mosquitto dynamic-security: the roles of the platform's own clients, and the plugin's JSON file.

The file is written before the broker's first start (the plugin reads it at start and owns it after);
live changes go through ``$CONTROL/dynamic-security/v1``.
"""

import asyncio
import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.topics import ROOT, device_root

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
                    "acls": [acl_json(a) for a in r.acls],
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


def acl_json(a: Acl) -> dict[str, Any]:
    """An ACL as the plugin's file and its ``createRole`` command both spell it."""
    return {"acltype": a.acltype, "topic": a.topic, "allow": a.allow, "priority": a.priority}


def device_username(site: str, device_id: str) -> str:
    """A device's broker username, and the client id it must connect with (the simulator's too)."""
    return f"{site}.{device_id}"


def device_role(site: str, device_type: str, device_id: str) -> Role:
    """One role per device (Mosquitto 2.0's dynsec has no %c/%u placeholders): publish under its own
    topics only, never to its own command topic (only the platform commands it), subscribe to that."""
    own = device_root(site, device_type, device_id)
    return Role(
        f"device.{site}.{device_id}",
        (
            Acl("publishClientSend", f"{own}/#"),
            Acl("publishClientSend", f"{own}/command", allow=False, priority=1),
            Acl("subscribePattern", f"{own}/command"),
        ),
    )


def device_client(site: str, device_type: str, device_id: str, password: str) -> tuple[Role, Client]:
    role = device_role(site, device_type, device_id)
    user = device_username(site, device_id)
    return role, Client(user, password, (role.name,), text_name=f"{device_type} {device_id}", client_id=user)


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
SERVICE_ROLE = Role("service", _access(f"{ROOT}/#", f"$share/+/{ROOT}/#", "$SYS/#", publish=(f"{ROOT}/#",)))
# The simulator plays every device; per-device credentials are for real devices.
SIMULATOR_ROLE = Role("simulator", _access(f"{ROOT}/+/+/+/command", publish=(f"{ROOT}/#",)))


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


def platform_dynsec(passwords: dict[str, str], devices: list[tuple[str, str, str, str]] | None = None) -> DynsecFile:
    """The dynsec file a new broker starts with: the platform's roles and users, and the given
    devices' own clients and roles ((site, type, id, password) each): the same clients the API
    creates through $CONTROL, written at once (the plugin rewrites its file after every command)."""
    missing = sorted(PLATFORM_USERS.keys() - passwords.keys())
    if missing:
        raise ValueError(f"no password for broker user(s): {', '.join(missing)}")
    made = [device_client(*d) for d in devices or []]
    return DynsecFile(
        roles=[DYNSEC_ADMIN_ROLE, SERVICE_ROLE, SIMULATOR_ROLE, HEALTHCHECK_ROLE, *(r for r, _ in made)],
        clients=[
            *(
                Client(user, passwords[user], roles, text_name=f"estatewatch {user}")
                for user, roles in PLATFORM_USERS.items()
            ),
            *(c for _, c in made),
        ],
    )


def new_password() -> str:
    return secrets.token_urlsafe(24)


# -- live commands ---------------------------------------------------------------------------------

DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
DYNSEC_RESPONSE = DYNSEC_TOPIC + "/response"


class DynsecError(Exception):
    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error


class DynsecCalls:
    """Commands to the plugin and their answers, matched by correlation data, over whatever MQTT
    client the caller has: ``request()`` gives the message to publish and the futures of the answers;
    feed every message on DYNSEC_RESPONSE to ``answer()``."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def request(self, *commands: dict[str, Any]) -> tuple[bytes, list[asyncio.Future[dict[str, Any]]]]:
        batch = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        sent, futures = [], []
        for i, command in enumerate(commands):
            key = f"{batch}-{i}"
            self._pending[key] = fut = loop.create_future()
            futures.append(fut)
            sent.append({**command, "correlationData": key})
        return json.dumps({"commands": sent}).encode(), futures

    def answer(self, payload: bytes | str) -> None:
        try:
            doc = json.loads(payload)
        except (ValueError, TypeError, RecursionError):
            return
        if not isinstance(doc, dict):
            return
        for response in doc.get("responses") or []:
            if isinstance(response, dict):
                fut = self._pending.pop(str(response.get("correlationData")), None)
                if fut is not None and not fut.done():
                    fut.set_result(response)

    def forget(self, futures: list[asyncio.Future[dict[str, Any]]]) -> None:
        gone = set(futures)
        for key in [k for k, f in self._pending.items() if f in gone]:
            del self._pending[key]

    def fail_all(self, exc: BaseException) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def results(self, futures: list[asyncio.Future[dict[str, Any]]], timeout_s: float) -> list[dict[str, Any]]:
        """The answers, in order; raises TimeoutError, or DynsecError on the first command that failed."""
        try:
            responses = await asyncio.wait_for(asyncio.gather(*futures), timeout_s)
        finally:
            self.forget(futures)
        for response in responses:
            if response.get("error"):
                raise DynsecError(str(response.get("command")), str(response["error"]))
        return list(responses)


def client_enabled_command(username: str, enabled: bool) -> dict[str, Any]:
    """Disabling kicks the client's live connection (Mosquitto does so on disableClient)."""
    return {"command": "enableClient" if enabled else "disableClient", "username": username}
