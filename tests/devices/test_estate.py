import datetime as dt
from pathlib import Path

import pytest

from devices.estate import Estate, EstateError, dump_estate, load_estate
from devices.reference import reference_estate
from devices.types import DeviceType

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "estates" / "luedi-south.yaml"


def test_shipped_reference_estate_is_the_generators_output() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == dump_estate(reference_estate()), (
        "estates/luedi-south.yaml is stale: run 'make generated'"
    )


def test_reference_estate_matches_the_report(reference: Estate) -> None:
    """The figures of ../shared/estate-facts.md."""
    assert len(reference.buildings) == 99
    assert sum(u.households for b in reference.buildings for u in b.units) == 4731
    assert len(reference.grids) == 23
    counts = reference.count_by_type()
    assert counts[DeviceType.SMOKE_SENSOR] == 4731  # one per household
    assert counts[DeviceType.EV_CHARGER] == 400
    assert counts[DeviceType.CAMERA] == 240
    assert counts[DeviceType.RADIO] == 35
    assert counts[DeviceType.VEHICLE_GATE] == 4
    assert 290 <= counts[DeviceType.DOOR_CONTROLLER] - 6 <= 310  # unit doors, plus 6 pedestrian gates
    assert 290 <= counts[DeviceType.POWER_METER] <= 310
    assert counts[DeviceType.SPACE_SENSOR] == 150
    assert 6100 <= len(reference.devices) <= 6200
    parking = [z for z in reference.zones if z.kind.value == "parking"]
    assert sum(z.capacity for z in parking if z.underground) == 550
    assert sum(z.capacity for z in parking if not z.underground) == 4000


def test_every_device_has_a_responsible_grid_except_estate_wide_ones(reference: Estate) -> None:
    for d in reference.devices:
        if d.building or d.zone:
            assert reference.grid_of(d) is not None, d.id


def test_load_reports_the_bad_entry(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace("unit: b001-u1, floor: 1}", "unit: b002-u1, floor: 1}", 1)
    bad = tmp_path / "estate.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(EstateError, match=r"unit 'b002-u1' is in building 'b002', not 'b001'"):
        load_estate(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site: [", "not valid YAML"),
        ("site: {id: x}\n", "site.name: Field required"),
        ("{}", "grids: Field required"),
    ],
)
def test_load_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "estate.yaml"
    bad.write_text(text)
    with pytest.raises(EstateError, match=message):
        load_estate(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EstateError, match="cannot read estate file"):
        load_estate(tmp_path / "nope.yaml")


def test_duplicate_ids_and_unknown_references_are_refused(reference: Estate) -> None:
    data = reference.model_dump()
    data["devices"].append(data["devices"][0])
    with pytest.raises(ValueError, match="duplicate device id"):
        Estate.model_validate(data)
    data = reference.model_dump()
    data["buildings"][0]["grid"] = "g99"
    with pytest.raises(ValueError, match="unknown grid 'g99'"):
        Estate.model_validate(data)


def test_unquoted_yaml_times_are_refused(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace("start: '20:00:00'", "start: 20:00", 1)
    bad = tmp_path / "estate.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(EstateError, match="write times in quotes"):
        load_estate(bad)


def test_roster_night_shift_runs_past_midnight(reference: Estate) -> None:
    grid = reference.grids[0]
    tz = reference.site.tz
    day = dt.datetime(2026, 12, 1, 10, 0, tzinfo=tz)
    late = dt.datetime(2026, 12, 1, 23, 30, tzinfo=tz)
    early = dt.datetime(2026, 12, 2, 3, 0, tzinfo=tz)
    assert [w.id for w in grid.on_duty(day)] == ["w01a"]
    assert [w.id for w in grid.on_duty(late)] == ["w01b"]
    assert [w.id for w in grid.on_duty(early)] == ["w01b"]
