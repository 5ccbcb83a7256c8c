"""Render bench/results/*.json as Markdown tables, and write them into the README's benchmark block.

    .venv/bin/python bench/_tables.py [name ...]     # print the tables of the named results (default: all)
    .venv/bin/python bench/_tables.py --readme       # rewrite README.md between the bench markers
    .venv/bin/python bench/_tables.py --check        # exit 1 when the README's block is not what --readme writes

The README's block is generated, never typed: every row of every results file is shown, per file, with a "met"
column computed from the row's goal where the goal is a comparison (">= 0.78", "< 50 ms @ 50 req/s", "> baseline",
"0.15-0.20", "True").
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
START = "<!-- bench:start -->"
END = "<!-- bench:end -->"

# Results written before the command was recorded in the file (env.command) ran with these.
_DEFAULT_COMMANDS = {
    "predictors_prefix": "DESKPILOT_BENCH_ONLY=prefix .venv/bin/python bench/predictors.py",
    "predictors_router": "DESKPILOT_BENCH_ONLY=router .venv/bin/python bench/predictors.py",
}

_CMP = re.compile(
    r"^\s*(?:well\s+)?(>=|<=|>|<|≥|≤)\s*(baseline\b|[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?)", re.IGNORECASE)
_RANGE = re.compile(r"^\s*([-+]?\d*\.?\d+)\s*[-–]\s*([-+]?\d*\.?\d+)\s*$")


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):  # a figure some benchmark stored as text, e.g. "2.4e-07"
        try:
            return float(x.replace(",", ""))
        except ValueError:
            return None
    return None


def met(value: Any, baseline: Any, goal: str | None) -> bool | None:
    """Whether `value` meets `goal`; None when the goal is not a checkable comparison.

    Understood: "OP NUMBER [unit ...]" (OP one of >=, <=, >, <; a leading "well" is ignored), "OP baseline" (the
    row's baseline), "LOW-HIGH" (inclusive), "True" / "False", and "never below the better part" for yes/no values.
    """
    if not goal:
        return None
    g = goal.strip()
    if g in ("True", "False"):
        return value is (g == "True") or str(value) == g
    if isinstance(value, str) and value.lower() in ("yes", "no") and g.startswith("never below"):
        return value.lower() == "yes"
    v = _num(value)
    m = _CMP.match(g)
    if m:
        op, rhs = m.groups()
        target = _num(baseline) if rhs.lower() == "baseline" else float(rhs.replace(",", ""))
        if v is None or target is None or math.isnan(v) or math.isnan(target):
            return False if v is None or math.isnan(v) else None
        return {">=": v >= target, "≥": v >= target, "<=": v <= target, "≤": v <= target,
                ">": v > target, "<": v < target}[op]
    r = _RANGE.match(g)
    if r and v is not None:
        return float(r.group(1)) <= v <= float(r.group(2))
    return None


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _cell(value: object) -> str:
    return _fmt(value).replace("|", "/").replace("\n", " ")


def _met_cell(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def load(name: str) -> dict[str, Any]:
    """One results file."""
    return dict(json.loads((RESULTS / f"{name}.json").read_text()))


def names() -> list[str]:
    """Every results file, by name."""
    return sorted(p.stem for p in RESULTS.glob("*.json"))


def command(name: str, data: dict[str, Any]) -> str:
    """The command that wrote a results file."""
    return str(data.get("env", {}).get("command") or _DEFAULT_COMMANDS.get(name)
               or f".venv/bin/python bench/{name}.py")


def _at_commit(env: dict[str, Any]) -> str:
    if not env.get("commit"):
        return ""
    return f" at commit `{env['commit']}`" + (" with modified tracked files" if env.get("tree_modified") else "")


def _rows_table(rows: list[dict[str, Any]], *, with_file: bool = False) -> list[str]:
    head = ["task", "data", "metric", "value", "baseline", "goal", "met"]
    if with_file:
        head = ["results", *head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.get("task"), r.get("data"), r.get("metric"), r.get("value"), r.get("baseline"), r.get("goal")]
        if with_file:
            cells = [r["_file"], *cells]
        ok = met(r.get("value"), r.get("baseline"), r.get("goal"))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + f" | {_met_cell(ok)} |")
    return lines


def table(name: str) -> str:
    """One results file as a Markdown table (title line with the command and date, then every row)."""
    data = load(name)
    when = data.get("env", {}).get("when", "")
    lines = [f"**{name}** (`{command(name, data)}`, {when})", "", *_rows_table(data["rows"])]
    return "\n".join(lines)


def readme_block() -> str:
    """The generated README block: the rows that have a goal, then every row of every results file."""
    loaded = {n: load(n) for n in names()}
    goal_rows = [{**r, "_file": n} for n, d in loaded.items() for r in d["rows"] if r.get("goal")]
    out = [START,
           "<!-- generated by `.venv/bin/python bench/_tables.py --readme` from bench/results/*.json;"
           " do not edit by hand -->", "",
           "Rows with a goal (all files):", "", *_rows_table(goal_rows, with_file=True), "",
           "Every row, per results file:", ""]
    for n, d in loaded.items():
        env = d.get("env", {})
        load_avg = env.get("load_average")
        load_txt = f", load average at start {load_avg['start'][0]:g}, at end {load_avg['end'][0]:g}" if load_avg else ""
        out += [f"<details><summary><code>bench/results/{n}.json</code>: {len(d['rows'])} rows, "
                f"{env.get('when', 'undated')}{load_txt}</summary>", "",
                f"Command: `{command(n, d)}`{_at_commit(env)}", "", *_rows_table(d["rows"]), "", "</details>", ""]
    out.append(END)
    return "\n".join(out)


def _split(text: str) -> tuple[str, str, str]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{README.name}: expected one {START} ... {END} block")
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    return head, START + block + END, tail


def readme_current(path: Path = README) -> str:
    """The block as it stands in the README."""
    return _split(path.read_text())[1]


def write_readme(path: Path = README) -> bool:
    """Rewrite the README's block from the results; True when it changed."""
    text = path.read_text()
    head, old, tail = _split(text)
    new = readme_block()
    if new == old:
        return False
    path.write_text(head + new + tail)
    return True


def main() -> None:
    """Print tables, or write / check the README block."""
    args = sys.argv[1:]
    if args == ["--readme"]:
        print(f"{README.name}: {'rewritten' if write_readme() else 'already current'}")
    elif args == ["--check"]:
        if readme_current() != readme_block():
            raise SystemExit(f"{README.name}'s benchmark block is stale: run .venv/bin/python bench/_tables.py --readme")
    else:
        print("\n\n".join(table(n) for n in (args or names())))


if __name__ == "__main__":
    main()
