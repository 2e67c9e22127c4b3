"""The reference estate, modeled on Lüdi South (绿地南社区), Xuzhou: see docs/estate.md.

Generated, not hand-written, so the counts stay those of the report; ``estates/luedi-south.yaml``
is this function's output and a test keeps the two equal.
"""

import datetime as dt

from devices.estate import (
    Building,
    Contact,
    Device,
    Estate,
    Grid,
    Shift,
    Site,
    Unit,
    Worker,
    Zone,
    ZoneKind,
)
from devices.types import DeviceType

BUILDINGS = 99
UNITS_PER_BUILDING = 3
HOUSEHOLDS = 4731
GRIDS = 23
FLOORS = 6
CHARGING_PILES = 400
CAMERAS = 240
RADIOS = 35
PEDESTRIAN_GATES = 6
VEHICLE_GATES = ("north", "south", "east", "garage")
FIRE_LANES = 12
SENSORS_PER_FIRE_LANE = 5
SURFACE_PARKING_ZONES = 9
SENSORS_PER_PARKING_ZONE = 10
SITE_LAT, SITE_LON = 34.2440, 117.2380
SPACING_DEG = 0.0006  # about 60 m between building rows


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers, larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _grids() -> list[Grid]:
    grids = []
    for g in range(1, GRIDS + 1):
        day, night = f"w{g:02d}a", f"w{g:02d}b"
        grids.append(
            Grid(
                id=f"g{g:02d}",
                name=f"第{g}网格",
                workers=[
                    Worker(id=day, name=f"网格员 {g:02d}A", mobile=f"1380000{g:02d}01", radio=f"radio-{g:02d}"),
                    Worker(id=night, name=f"网格员 {g:02d}B", mobile=f"1380000{g:02d}02"),
                ],
                roster=[
                    Shift(worker=day, start=dt.time(8), end=dt.time(20)),
                    Shift(worker=night, start=dt.time(20), end=dt.time(8)),
                ],
            )
        )
    return grids


def _buildings() -> list[Building]:
    per_unit = iter(_spread(HOUSEHOLDS, BUILDINGS * UNITS_PER_BUILDING))
    grid_of = [g for g, n in enumerate(_spread(BUILDINGS, GRIDS), start=1) for _ in range(n)]
    buildings = []
    for i in range(BUILDINGS):
        row, col = divmod(i, 11)
        bid = f"b{i + 1:03d}"
        buildings.append(
            Building(
                id=bid,
                name=f"{i + 1}号楼",
                grid=f"g{grid_of[i]:02d}",
                floors=FLOORS,
                lat=round(SITE_LAT + (row - 4) * SPACING_DEG, 6),
                lon=round(SITE_LON + (col - 5) * SPACING_DEG, 6),
                units=[Unit(id=f"{bid}-u{u}", households=next(per_unit)) for u in range(1, UNITS_PER_BUILDING + 1)],
            )
        )
    return buildings


def _zones(buildings: list[Building]) -> list[Zone]:
    zones = [Zone(id="pk-garage", name="地下车库", kind=ZoneKind.PARKING, grid="g01", capacity=550, underground=True)]
    surface = _spread(4000, SURFACE_PARKING_ZONES)
    for z in range(SURFACE_PARKING_ZONES):
        near = buildings[z * len(buildings) // SURFACE_PARKING_ZONES]
        zones.append(
            Zone(
                id=f"pk-s{z + 1:02d}",
                name=f"地面停车区 {z + 1}",
                kind=ZoneKind.PARKING,
                grid=near.grid,
                building=near.id,
                capacity=surface[z],
            )
        )
    for f in range(FIRE_LANES):
        near = buildings[f * len(buildings) // FIRE_LANES]
        zones.append(
            Zone(
                id=f"fl-{f + 1:02d}",
                name=f"消防通道 {f + 1}",
                kind=ZoneKind.FIRE_LANE,
                grid=near.grid,
                building=near.id,
            )
        )
    return zones


def _devices(buildings: list[Building], zones: list[Zone]) -> list[Device]:
    devices: list[Device] = []
    add = devices.append
    for b in buildings:
        for u in b.units:
            per_floor = -(-u.households // FLOORS)
            for h in range(u.households):
                floor, room = divmod(h, per_floor)
                add(
                    Device(
                        id=f"smk-{u.id}-{floor + 1}{room + 1:02d}",
                        type=DeviceType.SMOKE_SENSOR,
                        building=b.id,
                        unit=u.id,
                        floor=floor + 1,
                    )
                )
            add(Device(id=f"door-{u.id}", type=DeviceType.DOOR_CONTROLLER, building=b.id, unit=u.id, floor=1))
            add(
                Device(
                    id=f"pm-{u.id}",
                    type=DeviceType.POWER_METER,
                    building=b.id,
                    unit=u.id,
                    label="stairwell corridor circuit",
                )
            )
    for g in range(1, PEDESTRIAN_GATES + 1):
        add(Device(id=f"door-gate{g}", type=DeviceType.DOOR_CONTROLLER, label=f"estate pedestrian gate {g}"))
    for name in VEHICLE_GATES:
        zone = "pk-garage" if name == "garage" else None
        add(Device(id=f"vg-{name}", type=DeviceType.VEHICLE_GATE, zone=zone, label=f"{name} vehicle gate"))
    piles = _spread(CHARGING_PILES, len(buildings))
    for b, n in zip(buildings, piles, strict=True):
        for p in range(1, n + 1):
            add(Device(id=f"chg-{b.id}-{p}", type=DeviceType.EV_CHARGER, building=b.id, unit=b.units[0].id))
    fire_lanes = [z for z in zones if z.kind is ZoneKind.FIRE_LANE]
    parking = [z for z in zones if z.kind is ZoneKind.PARKING and not z.underground]
    cameras = 0
    for z in fire_lanes:
        add(Device(id=f"cam-{z.id}", type=DeviceType.CAMERA, zone=z.id, label="fire-lane camera with speaker"))
        cameras += 1
    for z in parking:
        add(Device(id=f"cam-{z.id}", type=DeviceType.CAMERA, zone=z.id, label="parking camera"))
        cameras += 1
    # The rest watch building entrances and lifts, where e-bikes are carried in.
    slots = [(b, index) for index in range(UNITS_PER_BUILDING) for b in buildings]
    for b, index in slots[: CAMERAS - cameras]:
        unit = b.units[index]
        add(
            Device(
                id=f"cam-{unit.id}",
                type=DeviceType.CAMERA,
                building=b.id,
                unit=unit.id,
                floor=1,
                label="entrance and lift camera",
            )
        )
    for z in fire_lanes:
        for s in range(1, SENSORS_PER_FIRE_LANE + 1):
            add(Device(id=f"sp-{z.id}-{s}", type=DeviceType.SPACE_SENSOR, zone=z.id))
    for z in parking:
        for s in range(1, SENSORS_PER_PARKING_ZONE + 1):
            add(Device(id=f"sp-{z.id}-{s:02d}", type=DeviceType.SPACE_SENSOR, zone=z.id))
    for r in range(1, RADIOS + 1):
        holder = f"grid {r:02d} day worker" if r <= GRIDS else f"patrol team radio {r - GRIDS}"
        add(Device(id=f"radio-{r:02d}", type=DeviceType.RADIO, label=holder))
    return devices


def reference_estate() -> Estate:
    buildings = _buildings()
    zones = _zones(buildings)
    return Estate(
        site=Site(id="luedi-south", name="绿地南社区 (Lüdi South), Yunlong, Xuzhou", lat=SITE_LAT, lon=SITE_LON),
        contacts=[
            Contact(role="property_manager", name="物业经理", mobile="13900000001"),
            Contact(role="property_office", name="物业服务中心", mobile="13900000002"),
            Contact(role="security", name="保安队长", mobile="13900000003"),
            Contact(role="community_police", name="社区民警", mobile="13900000004"),
        ],
        grids=_grids(),
        buildings=buildings,
        zones=zones,
        devices=_devices(buildings, zones),
    )


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from devices.estate import dump_estate

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "estates/luedi-south.yaml")
    target.write_text(dump_estate(reference_estate()), encoding="utf-8")
    print(target)
