"""The InsightReport end to end: planted slow step and costly intent, JSON, self-contained HTML, `deskpilot mine`."""

from __future__ import annotations

import json
import re
import time

import pytest

from insight.mining.conformance import IntendedJourney
from insight.mining.html import render_html
from insight.mining.report import STEPS, MineConfig, costly_intent, mine


@pytest.fixture(scope="module")
def sim():
    from insight.simulate import simulate

    return simulate(n_cases=2000, seed=5)


@pytest.fixture(scope="module")
def report(sim):
    ij = sim.truth.deviations.intended_journey
    journey = IntendedJourney(
        steps=[s["activity"] for s in ij], optional=[s["activity"] for s in ij if s["optional"]], source="designed"
    )
    calls: list[tuple[str, int, int]] = []
    rep = mine(sim.log, config=MineConfig(journey=journey), progress=lambda s, i, n: calls.append((s, i, n)))
    rep.timings["_calls"] = float(len(calls))
    return rep, calls


def test_progress_reports_every_step(report) -> None:
    _, calls = report
    assert [c[0] for c in calls] == [*STEPS, "done"]
    assert calls[-1][1] == calls[-1][2] == len(STEPS)


def test_slow_step_and_costly_intent_found(sim, report) -> None:
    rep, _ = report
    slow = sim.truth.slow_step
    # The planted approval wait is the slowest wait before any step, within 10% of the planted median.
    worst = max((a for a in rep.bottlenecks.activities if a.count >= 20), key=lambda a: a.median_s)
    assert worst.name == slow.activity
    assert worst.median_s / 3600 == pytest.approx(slow.median_wait_hours, rel=0.1)
    ci = costly_intent(rep)
    assert ci is not None and ci[0] == "intent" and ci[1] == sim.truth.knowledge_gap.intent
    assert ci[2] == pytest.approx(sim.truth.knowledge_gap.measured_throughput_ratio, rel=0.15)


def test_report_sections_agree_with_truth(sim, report) -> None:
    rep, _ = report
    assert rep.n_cases == 2000
    assert rep.misrouting.misrouted_cases == len(sim.truth.misrouting.reassigned_cases)
    assert rep.conformance is not None
    assert rep.conformance.fitting_share == pytest.approx(1 - sim.truth.deviations.share, abs=1e-9)
    assert any(a.kind == "new_activity" and a.subject == sim.truth.drift.activity for a in rep.alerts.alerts)
    text = " ".join(rep.headlines)
    assert sim.truth.knowledge_gap.intent in text
    assert "Ping-pong" in text and "Accounts L2" in text and "Billing L2" in text


def test_json_is_strict_and_complete(report) -> None:
    rep, _ = report
    d = rep.to_dict()
    s = json.dumps(d, allow_nan=False)
    back = json.loads(s)
    for key in ("process_map", "variants", "bottlenecks", "kpis", "misrouting", "conformance", "alerts", "labels"):
        assert back[key], key
    assert back["misrouting"]["ping_pong_cases"] == rep.misrouting.ping_pong_cases


def test_html_is_self_contained(report) -> None:
    rep, _ = report
    html = render_html(rep)
    assert html.startswith("<!doctype html>")
    assert "<svg" in html and "<style>" in html
    for section in ("findings", "map", "variants", "misrouting", "bottlenecks", "kpis", "conformance", "alerts"):
        assert f'id="{section}"' in html
    # No network: nothing is loaded from elsewhere (the SVG namespace URI is an identifier, not a fetch).
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    # Team names from the data are escaped, never injected.
    assert "<b>Billing" not in html


def test_mine_command_writes_both_files(tmp_path, sim) -> None:
    import typer
    from typer.testing import CliRunner

    from api.commands import mine as mine_cmd
    from insight.eventlog import write_log

    log_path = write_log(sim.log, tmp_path / "events.parquet")
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps(sim.truth.to_dict()))
    app = typer.Typer()
    mine_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in sub-command mode
        """Nothing."""

    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["mine", str(log_path), "--out", str(out), "--journey", str(truth_path), "--no-privacy"]
    )
    assert res.exit_code == 0, res.output
    assert "headline findings" in res.output
    data = json.loads((out / "insight.json").read_text())
    assert data["n_cases"] == 2000
    assert data["conformance"]["reference"].startswith("declared journey")
    assert (out / "report.html").read_text().count("<section") >= 8

    bad = CliRunner().invoke(app, ["mine", str(tmp_path / "missing.csv"), "--out", str(out)])
    assert bad.exit_code == 2
    assert "missing.csv" in bad.output


@pytest.mark.realdata
def test_mine_bpic2013_takes_seconds(shared_data) -> None:
    from insight.eventlog import read_log

    log = read_log(
        shared_data / "process_logs/bpic2013/VINST_incidents_ibm_with_support_level.csv.gz", preset="bpic2013_vinst"
    )
    t0 = time.perf_counter()
    rep = mine(log)
    took = time.perf_counter() - t0
    assert rep.n_cases == 7554 and rep.n_events == 65533
    assert took < 20.0  # a few seconds on a quiet machine; generous for a shared CI box
    assert rep.misrouting.push_to_front is not None
    assert rep.misrouting.ping_pong_cases > 0
    json.dumps(rep.to_dict(), allow_nan=False)
