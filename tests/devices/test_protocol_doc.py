"""Every example in docs/protocol.md is checked: accepted ones parse, rejected ones fail for their reason."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from devices.catalog import PayloadError, parse_payload
from devices.topics import parse_topic

DOC = Path(__file__).parents[2] / "docs" / "protocol.md"
SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
EXAMPLE = re.compile(
    r"(?:Rejected \(`(?P<reason>\w+)`\)[^\n]*\n)?Topic: `(?P<topic>[^`]+)`\n```json\n(?P<body>.*?)\n```", re.S
)


def examples() -> list[tuple[str, str | None, str]]:
    text = DOC.read_text(encoding="utf-8")
    found = [(m["topic"], m["reason"], m["body"]) for m in EXAMPLE.finditer(text)]
    # Every json block must be an example of this form: none slips through unchecked.
    assert len(found) == text.count("```json"), "a ```json block in protocol.md has no 'Topic:' line before it"
    return found


def test_the_doc_has_examples_for_every_type_and_rejections() -> None:
    found = examples()
    types = {parse_topic(t).device_type for t, _, _ in found}
    assert len(types) == 8
    assert sum(1 for _, reason, _ in found if reason) >= 5


@pytest.mark.parametrize(("topic", "reason", "body"), examples())
def test_example(topic: str, reason: str | None, body: str) -> None:
    parsed = parse_topic(topic)
    if reason is None:
        parse_payload(parsed.device_type, parsed.channel, body.encode())
        schema = json.loads((SCHEMAS / f"{parsed.device_type}.{parsed.channel}.schema.json").read_text())
        jsonschema.validate(json.loads(body), schema)
    else:
        with pytest.raises(PayloadError) as err:
            parse_payload(parsed.device_type, parsed.channel, body.encode())
        assert err.value.reason == reason
