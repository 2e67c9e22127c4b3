"""The one identifier rule: sites, devices, buildings, units, zones, grids and notification channels
are lowercase ASCII words, safe in a topic level, a file name and an InfluxDB tag."""

import re
from typing import Annotated

from pydantic import StringConstraints

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
Id = Annotated[str, StringConstraints(pattern=f"^{ID_RE.pattern}$")]


def is_valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
