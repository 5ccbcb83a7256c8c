"""Render bench/results/*.json as Markdown tables (the README's benchmark section is pasted from this output).

    .venv/bin/python bench/_tables.py [name ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(name: str) -> str:
    """One results file as a Markdown table."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    lines = [f"**{name}** (`bench/{name.split('_')[0]}.py`, {data.get('env', {}).get('when', '')})", "",
             "| task | data | metric | value | baseline | goal |", "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        cells = [r.get("task"), r.get("data"), r.get("metric"), r.get("value"), r.get("baseline"), r.get("goal")]
        lines.append("| " + " | ".join(_fmt(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the tables of the named results (default: all)."""
    names = sys.argv[1:] or sorted(p.stem for p in RESULTS.glob("*.json"))
    print("\n\n".join(table(n) for n in names))


if __name__ == "__main__":
    main()
