"""Mining on a Dask cluster over case-partitioned Parquet gives exactly what the single-process miners give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog import ingest
from insight.eventlog.schema import CASE_ID, EventLog
from insight.eventlog.writers import write_partitioned
from insight.mining.distributed import DistributedResult, connect, mine_partitioned, mine_single, part_paths
from insight.mining.report import InsightReport, MineConfig, _jsonable, mine
from insight.simulate import simulate_events

MINERS = ("extraction", "process_map", "variants", "bottlenecks", "handovers", "kpis")


def _assert_same(dist: DistributedResult, single: InsightReport | DistributedResult) -> None:
    assert (dist.n_cases, dist.n_events) == (single.n_cases, single.n_events)
    for name in MINERS:
        ours, theirs = getattr(dist, name), getattr(single, name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            # through the report's JSON form (NaN -> None), so every field and its order is compared exactly
            assert json.dumps(_jsonable(ours.to_dict())) == json.dumps(_jsonable(theirs.to_dict())), name
    pd.testing.assert_frame_equal(dist.labels.df, single.labels.df, check_exact=True)
    assert dist.labels.lines == single.labels.lines
    if single.labels.segments is not None:
        assert dist.labels.segments is not None
        pd.testing.assert_frame_equal(dist.labels.segments, single.labels.segments, check_exact=True)
        assert np.array_equal(dist.labels.resolve_pos, single.labels.resolve_pos)  # type: ignore[arg-type]


def _check(log: EventLog, tmp: Path, client: Any, parts: int) -> DistributedResult:
    written = write_partitioned(log, tmp, events_per_part=max(1, log.n_events // parts))
    assert len(written) >= min(parts, 2)
    # every case in exactly one part
    ids = [set(pd.read_parquet(p, columns=[CASE_ID])[CASE_ID]) for p in written]
    assert sum(len(s) for s in ids) == len(set().union(*ids))
    dist = mine_partitioned(tmp, client)
    _assert_same(dist, mine(log, config=MineConfig(conformance=False, render_map=False)))
    return dist


def test_simulated_log_equals_single_process(tmp_path: Path, client: Any) -> None:
    log = simulate_events(n_events=30_000, seed=3).log
    # shuffled rows: the writer groups cases itself, the single-process encoder sorts
    shuffled = EventLog(log.df.sample(frac=1.0, random_state=1).reset_index(drop=True), name=log.name,
                        case_attributes=log.case_attributes)
    dist = _check(shuffled, tmp_path, client, parts=4)
    assert dist.n_parts >= 4 and dist.handovers is not None and dist.process_map.edges
    # the one-process reference over the same parts (what bench/scale.py times against)
    _assert_same(dist, mine_single(tmp_path))


def test_streamed_frames_cut_at_case_boundaries(tmp_path: Path) -> None:
    df = simulate_events(n_events=5_000, seed=5).log.df
    frames = [df.iloc[i:i + 777] for i in range(0, len(df), 777)]  # cases run across frame edges
    written = write_partitioned(iter(frames), tmp_path, events_per_part=1_000, name="sim")
    back = pd.concat([pd.read_parquet(p) for p in written], ignore_index=True)
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_exact=True)
    firsts = [pd.read_parquet(p, columns=[CASE_ID])[CASE_ID] for p in written]
    for a, b in zip(firsts, firsts[1:], strict=False):
        assert a.iloc[-1] != b.iloc[0]
    paths, meta = part_paths(tmp_path)
    assert paths == written and meta["name"] == "sim"


def test_not_a_partitioned_log_is_refused(tmp_path: Path, client: Any) -> None:
    with pytest.raises(InvalidInput, match="not a partitioned log"):
        mine_partitioned(tmp_path, client)
    with pytest.raises(InvalidInput, match="--workers"):
        connect()


PUBLIC = [
    ("helpdesk/Helpdesk.xes.gz", None),
    ("helpdesk/helpdesk_finale_attributes.csv.gz", "helpdesk_csv"),
    ("helpdesk/tax2017_helpdesk.csv", "tax2017"),
    ("bpic2013/BPI_Challenge_2013_incidents.xes.gz", "bpic2013_xes"),
    ("bpic2013/VINST_incidents_ibm_with_support_level.csv.gz", "bpic2013_vinst"),
    ("bpic2012/BPI_Challenge_2012.xes.gz", None),
    ("bpic2012/tax2017_bpi_12_w.csv", "tax2017"),
    ("bpic2014/BPIC14_f_incident_activity.xes.gz", None),
    ("servicenow_uci498/incident_event_log_ibm_subset.csv.gz", "servicenow"),
]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(("rel", "preset"), PUBLIC)
def test_public_log_equals_single_process(shared_data: Path, tmp_path: Path, client: Any, rel: str,
                                          preset: str | None) -> None:
    log = ingest(shared_data / "process_logs" / rel, preset=preset, pseudonym_key="test-key")
    _check(log, tmp_path, client, parts=3)


def _mine_app() -> Any:
    """A typer app with the `mine` command (and a second one, which keeps typer in sub-command mode)."""
    import typer

    from api.commands import mine as mine_cmd

    app = typer.Typer()
    mine_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:
        """Nothing."""

    return app


def test_mine_command_on_a_scheduler(tmp_path: Path, client: Any) -> None:
    """`deskpilot mine LOG --scheduler ADDRESS` ingests, partitions and mines on that cluster."""
    from typer.testing import CliRunner

    from insight.eventlog import write_log

    log_path = write_log(simulate_events(n_events=8_000, seed=9).log, tmp_path / "events.parquet")
    app = _mine_app()

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mine", str(log_path), "--out", str(out), "--no-privacy", "--part-events", "3000",
                                   "--scheduler", client.scheduler.address])
    assert res.exit_code == 0, res.output
    assert "mined on the cluster" in res.output
    data = json.loads((out / "insight.json").read_text())
    reference = mine_single(out / "parts").to_dict()
    assert data["n_parts"] >= 2
    for key in ("process_map", "variants", "handovers", "kpis", "labels"):
        assert data[key] == reference[key], key


def test_worker_memory_needs_a_local_cluster_and_a_size(tmp_path: Path) -> None:
    """`--worker-memory` bounds a local cluster's workers; without one, or with a size dask cannot read, it says so."""
    from typer.testing import CliRunner

    app = _mine_app()

    log = tmp_path / "events.csv"
    log.write_text("case,activity,time\n1,a,2024-01-01\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["mine", str(log), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:1",
                                   "--worker-memory", "2GiB"])
    assert res.exit_code != 0 and "--workers N" in res.output
    for size in ("plenty", "10MB"):
        with pytest.raises(InvalidInput, match="not a usable size"):
            connect(workers=1, memory_limit=size)


def test_mine_command_on_a_local_cluster_with_bounded_workers(tmp_path: Path) -> None:
    """`--workers 1 --worker-memory 1GiB` starts a local cluster whose worker has that limit; it mines as one
    process does."""
    from typer.testing import CliRunner

    from insight.eventlog import write_log

    log_path = write_log(simulate_events(n_events=4_000, seed=4).log, tmp_path / "events.parquet")
    app = _mine_app()

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mine", str(log_path), "--out", str(out), "--no-privacy", "--part-events", "1500",
                                   "--workers", "1", "--worker-memory", "1GiB"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "insight.json").read_text())
    reference = mine_single(out / "parts").to_dict()
    assert data["n_parts"] >= 2
    for key in ("process_map", "variants", "handovers", "kpis", "labels"):
        assert data[key] == reference[key], key


def test_mine_command_streams_a_csv_into_parts(tmp_path: Path, client: Any) -> None:
    """`mine LOG.csv --scheduler` streams the CSV into parts (bounded memory) and mines what the in-memory ingest gives;
    a rerun replaces its own parts, and files it did not write stop it."""
    from typer.testing import CliRunner

    from insight.eventlog import write_log

    csv = write_log(simulate_events(n_events=6_000, seed=12).log, tmp_path / "events.csv")
    out = tmp_path / "out"
    args = ["mine", str(csv), "--out", str(out), "--no-privacy", "--part-events", "2000",
            "--scheduler", client.scheduler.address]
    app = _mine_app()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "streaming" in res.output
    data = json.loads((out / "insight.json").read_text())
    reference_parts = tmp_path / "reference"
    write_partitioned(ingest(csv, privacy=False), reference_parts, events_per_part=2000)
    reference = mine_single(reference_parts).to_dict()
    assert data["n_parts"] >= 2 and data["n_events"] == reference["n_events"]
    for key in ("process_map", "variants", "bottlenecks", "handovers", "kpis", "labels"):
        assert data[key] == reference[key], key

    res = CliRunner().invoke(app, args)  # the same --out again: its own parts are replaced
    assert res.exit_code == 0, res.output
    assert json.loads((out / "insight.json").read_text())["process_map"] == reference["process_map"]

    (out / "parts" / "notes.txt").write_text("mine", encoding="utf-8")
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "did not write" in res.output
    assert (out / "parts" / "notes.txt").is_file()
