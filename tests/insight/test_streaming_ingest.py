"""`ingest --partitioned`: a CSV streamed in chunks through case buckets gives the in-memory ingest's events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.errors import InvalidEventLog, InvalidInput
from insight.eventlog import ingest, write_log
from insight.eventlog.schema import CASE_ID, TIMESTAMP, EventLog
from insight.eventlog.stream import StreamResult, ingest_partitioned
from insight.mining.distributed import mine_partitioned, mine_single, part_paths
from insight.mining.report import MineConfig, mine
from insight.simulate import simulate_events
from tests.api.conftest import run_cli
from tests.insight.test_distributed import _assert_same

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "process_logs"
HELPDESK = DATA / "helpdesk" / "helpdesk_finale_attributes.csv.gz"
VINST = DATA / "bpic2013" / "VINST_incidents_ibm_with_support_level.csv.gz"
KEY = "streaming-test-key"
# a per-bucket measure (rows moved inside their bucket), not a sum the whole-file sort would give
NOT_SUMMED = {"rows_reordered"}

pytestmark = pytest.mark.skipif(not HELPDESK.is_file(), reason="shared data sets not present")


def _parts_frame(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _stream(src: Path, out: Path, **kw: Any) -> StreamResult:
    # tiny chunks and several buckets: cases cross chunk edges and every bucket gets many chunks' rows
    return ingest_partitioned(src, out, pseudonym_key=KEY, chunk_bytes=64 << 10, buckets=5,
                              events_per_part=4_000, **kw)


def _assert_same_events(mem: EventLog, res: StreamResult, tmp: Path) -> pd.DataFrame:
    # the in-memory log through the same Parquet writer, so both sides have the dtypes the miners read
    ref = tmp / "ref.parquet"
    write_log(mem, ref)
    ours = _parts_frame(res.parts)
    # the parts in manifest order hold the events in the in-memory order too (case, time, file position)
    pd.testing.assert_frame_equal(ours, pd.read_parquet(ref), check_exact=True)
    # every case lies in exactly one part
    ids = [set(pd.read_parquet(p, columns=[CASE_ID])[CASE_ID]) for p in res.parts]
    assert sum(len(s) for s in ids) == len(set().union(*ids)) == mem.n_cases
    assert res.case_attributes == mem.case_attributes
    assert res.activities == mem.activities
    qm, qs = mem.quality, res.quality
    assert qm is not None
    assert (qs.rows_in, qs.rows_out, qs.cases_out) == (qm.rows_in, qm.rows_out, qm.cases_out)
    names = {f.name for f in qm.fixes} | {f.name for f in qs.fixes}
    assert {n: qs.count(n) for n in names - NOT_SUMMED} == {n: qm.count(n) for n in names - NOT_SUMMED}
    assert qs.warnings == qm.warnings
    # the manifest the miners read
    paths, meta = part_paths(res.out_dir)
    assert paths == res.parts and meta["case_attributes"] == mem.case_attributes
    return ours


@pytest.mark.parametrize(("src", "preset"), [(HELPDESK, "helpdesk_csv"), (HELPDESK, None), (VINST, "bpic2013_vinst")])
def test_public_log_streams_to_the_in_memory_events(src: Path, preset: str | None, tmp_path: Path) -> None:
    mem = ingest(src, preset=preset, pseudonym_key=KEY)
    res = _stream(src, tmp_path / "parts", preset=preset)
    assert res.chunks >= 10 and res.buckets == 5 and len(res.parts) >= 3
    ours = _assert_same_events(mem, res, tmp_path)
    assert ours[CASE_ID].nunique() > 1000
    # nothing of the spill is left next to or inside the output
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == sorted(
        ["_parts.json", *[p.name for p in res.parts]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "ref.parquet"]


def test_time_ordered_simulated_csv_mines_like_the_in_memory_log(tmp_path: Path, client: Any) -> None:
    sim = simulate_events(n_events=30_000, seed=11).log
    # an export sorted by time, not by case: cases interleave across every chunk
    by_time = sim.df.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    csv = write_log(EventLog(by_time, name="sim"), tmp_path / "sim.csv")
    mem = ingest(csv, pseudonym_key=KEY)
    res = _stream(csv, tmp_path / "parts")
    assert res.chunks >= 20
    _assert_same_events(mem, res, tmp_path)
    # exact duplicates across chunk edges are found at the bucket stage
    dup = tmp_path / "dup.csv"
    text = csv.read_text(encoding="utf-8").splitlines()
    dup.write_text("\n".join([*text, *text[1:400]]) + "\n", encoding="utf-8")
    mem_dup = ingest(dup, pseudonym_key=KEY)
    res_dup = _stream(dup, tmp_path / "parts_dup")
    assert res_dup.quality.count("exact_duplicates_dropped") == 399
    _assert_same_events(mem_dup, res_dup, tmp_path)

    reference = mine(mem, config=MineConfig(conformance=False, render_map=False))
    single = mine_single(res.out_dir)
    _assert_same(single, reference)
    _assert_same(mine_partitioned(res.out_dir, client), reference)


def test_types_and_times_are_decided_on_the_whole_file(tmp_path: Path) -> None:
    # a column numeric in the first chunks but not later stays text; an integer column with a gap later is float
    rows = ["case,activity,time,code,amount,note"]
    for i in range(6000):
        code = "X7" if i == 5500 else str(i % 13)
        amount = "" if i == 5900 else str(i % 7)
        rows.append(f"c{i % 300},a{i % 5},2024-03-{1 + i % 28:02d} 10:{i % 60:02d}:00,{code},{amount},n{i % 3}")
    rows.append("c1,a1,not a date,1,1,n1")
    src = tmp_path / "mixed.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    mem = ingest(src, pseudonym_key=KEY)
    res = ingest_partitioned(src, tmp_path / "parts", pseudonym_key=KEY, chunk_bytes=8 << 10, buckets=3)
    assert res.chunks >= 10
    ours = _assert_same_events(mem, res, tmp_path)
    assert ours["code"].dtype == mem.df["code"].dtype and not pd.api.types.is_numeric_dtype(ours["code"])
    assert pd.api.types.is_float_dtype(ours["amount"]) and pd.api.types.is_float_dtype(mem.df["amount"])
    assert res.quality.count("timestamp_unparseable") == 1
    bad = next(f for f in res.quality.fixes if f.name == "timestamp_unparseable")
    assert "data row 6001" in bad.detail


def _no_output(tmp: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(f".{out.name}")]


def test_malformed_file_fails_naming_the_fault_and_leaves_no_output(tmp_path: Path) -> None:
    lines = HELPDESK.open("rb").read()
    import gzip

    text = gzip.decompress(lines).decode("utf-8").splitlines()
    # a ragged row deep in the file: it fails in a late chunk, after buckets were spilled
    text.insert(15_000, "Case 1,Resolve ticket,Value 1")
    bad = tmp_path / "ragged.csv"
    bad.write_text("\n".join(text) + "\n", encoding="utf-8")
    out = tmp_path / "parts"
    with pytest.raises(InvalidEventLog) as exc:
        ingest_partitioned(bad, out, pseudonym_key=KEY, chunk_bytes=64 << 10, buckets=4)
    msg = str(exc.value)
    assert "cannot parse CSV" in msg and "16 header columns" in msg and "ragged.csv" in msg
    _no_output(tmp_path, out)

    with pytest.raises(InvalidEventLog, match=r"column mapping names column\(s\) \['Ticket'\]"):
        ingest_partitioned(HELPDESK, out, mapping={"Ticket": "case_id"}, pseudonym_key=KEY)
    _no_output(tmp_path, out)
    nots = tmp_path / "nots.csv"
    nots.write_text("case,activity,time\n" + "".join(f"c{i},a,someday\n" for i in range(50)), encoding="utf-8")
    with pytest.raises(InvalidEventLog, match="no value of the timestamp column could be parsed"):
        ingest_partitioned(nots, out, pseudonym_key=KEY, chunk_bytes=256, buckets=2)
    _no_output(tmp_path, out)
    with pytest.raises(InvalidInput, match="reads CSV"):
        ingest_partitioned(DATA / "helpdesk" / "Helpdesk.xes.gz", out, pseudonym_key=KEY)
    _no_output(tmp_path, out)
    # an existing folder with files in it is never written over
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InvalidInput, match="exists and is not empty"):
        ingest_partitioned(HELPDESK, out, pseudonym_key=KEY)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_partitioned_ingest_then_mine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    env = {"DESKPILOT_HOME": str(tmp_path / "home"), "COLUMNS": "300"}
    out = tmp_path / "parts"
    code, stdout, err = run_cli(["ingest", str(HELPDESK), "--preset", "helpdesk_csv", "--out", str(out),
                                 "--partitioned", "--part-events", "5000", "--chunk-mb", "1", "--bucket-mb", "1"],
                                monkeypatch, capfd, env=env)
    assert code == 0, err
    assert "exact_duplicates_dropped" in stdout and f"to {out}" in stdout
    meta = json.loads((out / "_parts.json").read_text(encoding="utf-8"))
    assert len(meta["parts"]) >= 4 and meta["name"] == "helpdesk_finale_attributes"
    assert mine_single(out).n_events == 21_221
    # the folder mines in one process too (the full report: misrouting, conformance, alerts)
    code, stdout, err = run_cli(["mine", str(out), "--out", str(tmp_path / "insight")], monkeypatch, capfd, env=env)
    assert code == 0, err
    report = json.loads((tmp_path / "insight" / "insight.json").read_text(encoding="utf-8"))
    assert (report["name"], report["n_cases"], report["n_events"]) == ("helpdesk_finale_attributes", 4580, 21_221)
    assert report["misrouting"]["n_cases"] == 4580 and report["process_map"]
    code, _, err = run_cli(["ingest", str(HELPDESK), "--out", str(tmp_path / "p2"), "--partitioned",
                            "--map", "Ticket=case_id"], monkeypatch, capfd, env=env)
    assert code == 2 and "'Ticket'" in err and not (tmp_path / "p2").exists()
    code, _, err = run_cli(["ingest", str(HELPDESK), "--partitioned"], monkeypatch, capfd, env=env)
    assert code == 2 and "--out" in err


def _small_csv(sep: str) -> str:
    rows = [sep.join(["Ticket ID", "Status", "Changed At", "Agent", "Note"])]
    for i in range(3000):
        note = '""' if i % 11 == 0 else ('"multi\nline, müller"' if i % 17 == 0 else f"Zoë {i % 4}")
        rows.append(sep.join([f"T{i % 250}", f"step {i % 6}", f"{1 + i % 28:02d}/03/2024 {i % 24:02d}:00",
                              "" if i % 13 == 0 else f"agent{i % 9}", note]))
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(("encoding", "sep"), [("utf-8-sig", ";"), ("utf-16", ","), ("cp1252", "\t"),
                                               ("utf-8", "|")])
def test_encodings_dialects_and_quoted_fields_stream_like_memory(encoding: str, sep: str, tmp_path: Path) -> None:
    src = tmp_path / "export.csv"
    src.write_bytes(_small_csv(sep).encode(encoding))
    mapping = {"Ticket ID": "case_id", "Status": "activity", "Changed At": "timestamp", "Agent": "resource"}
    mem = ingest(src, mapping=mapping, dayfirst=True, pseudonym_key=KEY)
    res = ingest_partitioned(src, tmp_path / "parts", mapping=mapping, dayfirst=True, pseudonym_key=KEY,
                             chunk_bytes=4 << 10, buckets=3, events_per_part=500)
    assert res.chunks >= 10
    ours = _assert_same_events(mem, res, tmp_path)
    assert ours["Note"].isna().sum() == mem.df["Note"].isna().sum() > 0
    assert (ours["Note"] == "multi\nline, müller").sum() > 0
