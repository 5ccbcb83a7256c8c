"""The README's benchmark block is generated from bench/results/*.json and cannot drift from it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tables", REPO / "bench" / "_tables.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_block_is_what_tables_writes_from_the_committed_results() -> None:
    tables = _tables()
    current = tables.readme_current()
    expected = tables.readme_block()
    assert current == expected, "README benchmark block is stale: run .venv/bin/python bench/_tables.py --readme"


def test_every_row_of_every_results_file_is_in_the_readme() -> None:
    tables = _tables()
    block = tables.readme_current()
    for name in tables.names():
        data = tables.load(name)
        assert f"bench/results/{name}.json" in block
        assert tables.command(name, data) in block
        for row in data["rows"]:
            cells = [tables._cell(row[k]) for k in ("task", "data", "metric", "value", "baseline", "goal")]
            assert "| " + " | ".join(cells) + " |" in block, (name, row)


@pytest.mark.parametrize(("value", "baseline", "goal", "expected"), [
    (0.79, None, ">= 0.78", True),
    (0.77, None, ">= 0.78", False),
    (22.2, None, "< 50 ms @ 50 req/s", True),
    (0.49, None, "< 0.30", False),
    (11.07, None, ">= 10x", True),
    (2.1, None, "well < 24 GiB", True),
    (1286.0, None, ">= 300 tickets/s", True),
    (2e-7, None, "<= 1e-5", True),
    ("2.4e-07", None, "<= 1e-5", True),
    (0.17, None, "0.15-0.20", True),
    (0.21, None, "0.15-0.20", False),
    (True, None, "True", True),
    (False, None, "True", False),
    ("yes", 0.96, "never below the better part", True),
    ("NO", 0.96, "never below the better part", False),
    (96.9, 98.2, ">= baseline", False),
    (98.2, 98.2, ">= baseline", True),
    (98.2, None, ">= baseline", None),
    ("failed rc=137", None, "< 24 GiB", False),
    (float("nan"), None, ">= 300", False),
    (3.0, None, "a few seconds", None),
    (0.4, None, None, None),
])
def test_met_is_computed_from_comparison_goals(value: object, baseline: object, goal: str | None,
                                               expected: bool | None) -> None:
    assert _tables().met(value, baseline, goal) is expected


def test_readme_rewrite_replaces_only_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _tables()
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(REPO / "bench" / "results" / "simulate.json", results / "simulate.json")
    data = json.loads((results / "simulate.json").read_text())
    data["rows"][0]["value"] = 12345.0
    (results / "simulate.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{tables.START}\nold\n{tables.END}\nafter\n")
    monkeypatch.setattr(tables, "RESULTS", results)
    assert tables.write_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# t\n\nbefore\n") and text.endswith("\nafter\n")
    assert "old" not in text.split(tables.START)[1].split(tables.END)[0]
    assert "| 12,345 |" in text and "bench/results/simulate.json" in text
    assert tables.write_readme(readme) is False
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="bench:start"):
        tables.write_readme(readme)
