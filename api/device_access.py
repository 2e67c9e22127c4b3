"""A device's broker identity in Mosquitto's dynamic security: one client pinned to its client id,
one role that may publish only under the device's own topics and subscribe only to its commands
(Mosquitto 2.0's dynsec has no %c/%u placeholders, so each device gets its own role)."""

import secrets

from api.mqtt import ApiBroker, DynsecError
from devices.topics import ROOT
from devices.types import DeviceType


def username(site: str, device_id: str) -> str:
    """Also the client id the device must connect with (the simulator's convention)."""
    return f"{site}.{device_id}"


def role_name(site: str, device_id: str) -> str:
    return f"device.{site}.{device_id}"


def _acls(site: str, device_type: DeviceType, device_id: str) -> list[dict[str, object]]:
    own = f"{ROOT}/{site}/{device_type.value}/{device_id}"
    return [
        {"acltype": "publishClientSend", "topic": f"{own}/#", "allow": True, "priority": 0},
        # Only the platform sends a device its commands.
        {"acltype": "publishClientSend", "topic": f"{own}/command", "allow": False, "priority": 1},
        {"acltype": "subscribePattern", "topic": f"{own}/command", "allow": True, "priority": 0},
    ]


async def provision(broker: ApiBroker, site: str, device_type: DeviceType, device_id: str) -> str:
    """Create the device's role and client; returns its new password."""
    password = secrets.token_urlsafe(24)
    user, role = username(site, device_id), role_name(site, device_id)
    await broker.dynsec({"command": "createRole", "rolename": role, "acls": _acls(site, device_type, device_id)})
    try:
        await broker.dynsec(
            {
                "command": "createClient",
                "username": user,
                "password": password,
                "clientid": user,
                "textname": f"{device_type.value} {device_id}",
                "roles": [{"rolename": role}],
            }
        )
    except DynsecError:
        await broker.dynsec({"command": "deleteRole", "rolename": role})
        raise
    return password


async def rotate(broker: ApiBroker, site: str, device_id: str) -> str:
    password = secrets.token_urlsafe(24)
    await broker.dynsec({"command": "setClientPassword", "username": username(site, device_id), "password": password})
    return password


async def set_enabled(broker: ApiBroker, site: str, device_id: str, enabled: bool) -> None:
    """Disabling kicks the device's live connection (Mosquitto does so on disableClient)."""
    command = "enableClient" if enabled else "disableClient"
    await broker.dynsec({"command": command, "username": username(site, device_id)})


async def remove(broker: ApiBroker, site: str, device_id: str) -> None:
    for command in (
        {"command": "deleteClient", "username": username(site, device_id)},
        {"command": "deleteRole", "rolename": role_name(site, device_id)},
    ):
        try:
            await broker.dynsec(command)
        except DynsecError as exc:
            if "not found" not in exc.error.lower():
                raise
