"""Shared helpers for the benchmarks: data location, timing, the results table and its JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
sys.path.insert(0, str(REPO))


def data_dir() -> Path:
    """../shared/data, or DESKPILOT_DATA."""
    d = Path(os.environ.get("DESKPILOT_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (d / "SOURCES.md").is_file():
        raise SystemExit(f"public data not found at {d}; set DESKPILOT_DATA")
    return d


@dataclass
class Row:
    """One measured figure, next to its baseline and goal."""

    task: str
    data: str
    metric: str
    value: float | str | None
    baseline: float | str | None = None
    goal: str | None = None


def command() -> str:
    """How this benchmark was started, as a reader would retype it (DESKPILOT_BENCH_* variables included)."""
    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("DESKPILOT_BENCH_")]
    script = Path(sys.argv[0]).resolve()
    with suppress(ValueError):
        script = script.relative_to(REPO)
    return " ".join([*env, ".venv/bin/python", str(script), *sys.argv[1:]])


def git_state() -> dict[str, Any]:
    """The commit the benchmark ran on, and whether tracked files differed from it (None outside a git checkout)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short=12", "HEAD"), "tree_modified": None if status is None else bool(status)}


@dataclass
class Results:
    """Rows of one benchmark, printed as a table and written to bench/results/<name>.json."""

    name: str
    rows: list[Row] = field(default_factory=list)
    extra_env: dict[str, Any] = field(default_factory=dict)
    load_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    git_at_start: dict[str, Any] = field(default_factory=git_state)

    def add(self, task: str, data: str, metric: str, value: Any, baseline: Any = None, goal: str | None = None) -> None:
        """Add a row (floats rounded to 4 places) and echo it at once."""
        def r(x: Any) -> Any:
            return round(float(x), 4) if isinstance(x, (int, float)) and not isinstance(x, bool) else x

        row = Row(task, data, metric, r(value), r(baseline), goal)
        self.rows.append(row)
        print(f"  {task:<34} {data:<28} {metric:<26} {row.value!s:>12} {row.baseline!s:>12} {goal or ''}", flush=True)

    def env(self) -> dict[str, Any]:
        """Where the figures were taken."""
        import importlib.metadata as md

        pkgs = {}
        for p in ("pm4py", "pandas", "polars", "numpy", "scikit-learn", "lightgbm", "torch",
                  "sentence-transformers", "chromadb", "fastapi"):
            with suppress(md.PackageNotFoundError):
                pkgs[p] = md.version(p)
        return {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "packages": pkgs,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command(),
            **self.git_at_start,
            # 1/5/15-minute load averages when the run started and ended (the machine is shared)
            "load_average": {"start": [round(x, 2) for x in self.load_at_start],
                             "end": [round(x, 2) for x in os.getloadavg()]},
            **self.extra_env,
        }

    def write(self) -> Path:
        """Print the whole table and write the JSON file."""
        print()
        print(f"{'task':<34} {'data':<28} {'metric':<26} {'value':>12} {'baseline':>12} goal")
        print("-" * 130)
        for row in self.rows:
            print(f"{row.task:<34} {row.data:<28} {row.metric:<26} {row.value!s:>12} {row.baseline!s:>12} {row.goal or ''}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{self.name}.json"
        out.write_text(json.dumps({"rows": [asdict(r) for r in self.rows], "env": self.env()}, indent=2))
        print(f"\nwrote {out.relative_to(REPO)}")
        return out


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as t: ...; t()` gives the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Smallest wall time of `repeat` runs (the least disturbed by a noisy shared machine) and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, Any]]:
    """The smallest wall time of each function over `repeat` rounds, every round running each function once in
    turn: both sides of a speed ratio get the same repeats and share the machine's quiet and busy moments.
    Returns {name: (best seconds, last result)}."""
    best = dict.fromkeys(fns, float("inf"))
    last: dict[str, Any] = dict.fromkeys(fns)
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            last[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], last[name]) for name in fns}
