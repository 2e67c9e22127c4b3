from pathlib import Path

from devices.schemas import render, schemas

FOLDER = Path(__file__).parents[2] / "docs" / "schemas"


def test_docs_schemas_are_current() -> None:
    expected = schemas()
    on_disk = {p.name for p in FOLDER.glob("*.schema.json")}
    assert on_disk == set(expected), "docs/schemas has stale or missing files: run 'make generated'"
    for name, schema in expected.items():
        assert (FOLDER / name).read_text(encoding="utf-8") == render(schema), f"{name} is stale: run 'make generated'"
