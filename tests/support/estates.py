"""A small estate with every device type, cut from the reference estate."""

from devices.estate import Estate
from devices.reference import reference_estate
from devices.types import DeviceType

PER_TYPE = {
    DeviceType.SMOKE_SENSOR: 8,
    DeviceType.DOOR_CONTROLLER: 4,
    DeviceType.VEHICLE_GATE: 2,
    DeviceType.EV_CHARGER: 4,
    DeviceType.CAMERA: 4,
    DeviceType.POWER_METER: 4,
    DeviceType.SPACE_SENSOR: 6,
    DeviceType.RADIO: 3,
}


def small_estate() -> Estate:
    full = reference_estate()
    buildings = {b.id for b in full.buildings[:4]}
    zones = {"fl-01", "pk-s01", "pk-garage"}
    taken: dict[DeviceType, int] = dict.fromkeys(DeviceType, 0)
    devices = []
    for d in full.devices:
        inside = (d.building in buildings) or (d.zone in zones) or (d.building is None and d.zone is None)
        if inside and taken[d.type] < PER_TYPE[d.type]:
            taken[d.type] += 1
            devices.append(d)
    grids = {b.grid for b in full.buildings if b.id in buildings} | {z.grid for z in full.zones if z.id in zones}
    return Estate(
        site=full.site.model_copy(update={"id": "small"}),
        contacts=full.contacts,
        grids=[g for g in full.grids if g.id in grids],
        buildings=[b for b in full.buildings if b.id in buildings],
        zones=[z for z in full.zones if z.id in zones],
        devices=devices,
    )
