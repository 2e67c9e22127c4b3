"""Writes the boards into grafana/dashboards/ (``python -m grafana.build``); a test keeps them current."""

import json
import sys
from pathlib import Path
from typing import Any

from grafana.boards import BOARDS

DASHBOARDS = Path(__file__).parent / "dashboards"


def rendered() -> dict[str, str]:
    """File name -> JSON text of every board."""
    return {f"{name}.json": _text(make()) for name, make in BOARDS.items()}


def _text(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(out: Path = DASHBOARDS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (out / name).write_text(text)
    print(f"wrote {len(BOARDS)} dashboards to {out}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARDS)
