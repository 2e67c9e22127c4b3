"""A device's broker identity, made and changed on the live broker through dynamic security's
$CONTROL topic (the client and role themselves are defined once, in store/dynsec.py)."""

import secrets

from api.mqtt import ApiBroker, DynsecError
from devices.types import DeviceType
from store.dynsec import acl_json, client_enabled_command, device_client, device_role, device_username

username = device_username


async def provision(broker: ApiBroker, site: str, device_type: DeviceType, device_id: str) -> str:
    """Create the device's role and client; returns its new password."""
    password = secrets.token_urlsafe(24)
    role, client = device_client(site, device_type.value, device_id, password)
    await broker.dynsec({"command": "createRole", "rolename": role.name, "acls": [acl_json(a) for a in role.acls]})
    try:
        await broker.dynsec(
            {
                "command": "createClient",
                "username": client.username,
                "password": password,
                "clientid": client.client_id,
                "textname": client.text_name,
                "roles": [{"rolename": role.name}],
            }
        )
    except DynsecError:
        await broker.dynsec({"command": "deleteRole", "rolename": role.name})
        raise
    return password


async def rotate(broker: ApiBroker, site: str, device_id: str) -> str:
    password = secrets.token_urlsafe(24)
    await broker.dynsec({"command": "setClientPassword", "username": username(site, device_id), "password": password})
    return password


async def set_enabled(broker: ApiBroker, site: str, device_id: str, enabled: bool) -> None:
    """Disabling kicks the device's live connection (Mosquitto does so on disableClient)."""
    await broker.dynsec(client_enabled_command(username(site, device_id), enabled))


async def remove(broker: ApiBroker, site: str, device_id: str) -> None:
    for command in (
        {"command": "deleteClient", "username": username(site, device_id)},
        {"command": "deleteRole", "rolename": device_role(site, "", device_id).name},
    ):
        try:
            await broker.dynsec(command)
        except DynsecError as exc:
            if "not found" not in exc.error.lower():
                raise
