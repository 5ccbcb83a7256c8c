"""`deskpilot mine` prices time, handoffs and touches as the analyst says, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.commands import mine as mine_cmd
from insight.eventlog import write_log
from insight.simulate import simulate

app = typer.Typer()
mine_cmd.register(app)


@app.command("noop")
def _noop() -> None:  # a second command keeps typer in sub-command mode
    """Nothing."""


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = simulate(n_cases=400, seed=11, weeks=4)
    return write_log(sim.log, tmp_path_factory.mktemp("costs") / "events.parquet")


def _variants(out: Path) -> dict:
    return json.loads((out / "insight.json").read_text())["variants"]


def test_cost_options_reprice_every_variant(log_path: Path, tmp_path: Path) -> None:
    default_out, priced_out = tmp_path / "default", tmp_path / "priced"
    res = CliRunner().invoke(app, ["mine", str(log_path), "--out", str(default_out), "--no-privacy"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [
        "mine", str(log_path), "--out", str(priced_out), "--no-privacy",
        "--hour-cost", "2", "--handoff-cost", "0", "--touch-cost", "0", "--time-basis", "mean", "--min-support", "3",
    ])
    assert res.exit_code == 0, res.output
    default, priced = _variants(default_out), _variants(priced_out)
    assert default["cost_model"]["handoff_cost"] > 0 and default["cost_model"]["touch_cost"] > 0
    assert priced["cost_model"] == {"hour_cost": 2.0, "handoff_cost": 0.0, "touch_cost": 0.0,
                                    "time_basis": "mean", "min_support": 3}
    # with only time priced, a variant's cost is its cases x mean hours x 2
    v = priced["happy_path"]
    assert v["cost"] == pytest.approx(v["cases"] * v["mean_s"] / 3600.0 * 2.0, rel=1e-9)
    assert all(p["cases"] >= 3 for p in priced["costly_paths"])


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--time-basis", "mode", "time_basis"),
    ("--handoff-cost", "-1", "handoff-cost"),
    ("--min-support", "0", "min-support"),
])
def test_a_bad_price_is_one_line_naming_it(log_path: Path, tmp_path: Path, option: str, value: str,
                                           named: str) -> None:
    res = CliRunner().invoke(app, ["mine", str(log_path), "--out", str(tmp_path / "o"), option, value])
    assert res.exit_code == 2, res.output
    assert named in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o" / "insight.json").exists()
