"""`deskpilot train --sample-fraction / --max-train-cases / --sample-window` (issue 19, training at scale): the
router and the prefix models fit on whole cases sampled per start window, the registry's metadata records the
sample, and a bad value ends the command with one line naming its option (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.conftest import run_cli

CAP = 60
SAMPLED_TASKS = ("router", "next_activity", "remaining_time")


def _metadata(registry: Path, task: str) -> dict:
    from insight.models.registry import METADATA_FILE, ModelRegistry

    version = ModelRegistry(registry).live_version(task)
    assert version is not None, task
    return json.loads((registry / task / version / METADATA_FILE).read_text())


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DESKPILOT_HOME": str(tmp_path / "home")}


@pytest.mark.slow
def test_max_train_cases_caps_what_every_sampled_model_fits_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    from insight.eventlog import write_log
    from insight.simulate import simulate

    sim = simulate(n_cases=300, seed=13)
    write_log(sim.log, events := tmp_path / "events.csv")
    sim.tickets.to_csv(tickets := tmp_path / "tickets.csv", index=False)
    registry = tmp_path / "registry"
    code, out, err = run_cli(["train", "--log", str(events), "--tickets", str(tickets), "--registry", str(registry),
                              "--no-embeddings", "--max-train-cases", str(CAP), "--sample-window", "3D"],
                             monkeypatch, capfd, env=_env(tmp_path))
    assert code == 0, out + err
    for task in SAMPLED_TASKS:
        extra = _metadata(registry, task)["extra"]
        sample = extra["train_sample"]
        assert sample["max_train_cases"] == CAP and sample["sample_window"] == "3D", (task, sample)
        assert sample["n_cases_sampled"] == CAP < sample["n_cases_before_sample"], (task, sample)
        # what was fitted: the evaluated model on the training sample, the saved one refitted under the same cap
        assert extra["n_cases_evaluated_train"] == CAP, (task, extra)
        assert 0 < extra["n_cases_refit"] <= CAP, (task, extra)
    # the intent model reads every labelled ticket: a sample is not recorded where none was taken
    intent = _metadata(registry, "intent")
    assert "train_sample" not in intent["extra"] and intent["metrics"]["n_train"] > CAP

    # a per-model command takes the same options; a fraction keeps its share of the training cases
    one = tmp_path / "one"
    code, out, err = run_cli(["train", "next-activity", str(events), "--registry", str(one), "--sample-fraction",
                              "0.25"], monkeypatch, capfd, env=_env(tmp_path))
    assert code == 0, out + err
    sample = _metadata(one, "next_activity")["extra"]["train_sample"]
    assert sample["sample_fraction"] == 0.25 and sample["sample_window"] == "7D"
    assert sample["n_cases_sampled"] == round(0.25 * sample["n_cases_before_sample"])


@pytest.mark.parametrize(("args", "option"), [
    (["--sample-fraction", "0"], "--sample-fraction"),
    (["--sample-fraction", "1.5"], "--sample-fraction"),
    (["--max-train-cases", "0"], "--max-train-cases"),
    (["--sample-fraction", "0.5", "--max-train-cases", "10"], "--max-train-cases"),
    (["--sample-fraction", "0.5", "--sample-window", "a fortnight"], "--sample-window"),
    (["--sample-window", "7D"], "--sample-window"),
])
@pytest.mark.parametrize("command", [[], ["next-activity", "events.csv"], ["remaining-time", "events.csv"],
                                     ["router", "events.csv"]])
def test_a_bad_sample_option_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capfd: pytest.CaptureFixture[str], command: list[str],
                                                args: list[str], option: str) -> None:
    registry = tmp_path / "registry"
    code, out, err = run_cli(["train", *command, *args, "--registry", str(registry)], monkeypatch, capfd,
                             env=_env(tmp_path))
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and lines[0].startswith("error ("), err
    assert not registry.exists()  # nothing was read or trained
