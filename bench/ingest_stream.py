"""Streaming ingest: peak memory and time of `ingest --partitioned` against the in-memory ingest, same CSV.

A simulated log is written as one CSV sorted by time (as a helpdesk exports it, cases interleaved). Each side runs
in its own child process, so each peak RSS is that side's alone: the in-memory side is `ingest` then
`write_partitioned`, the streaming side is `ingest_partitioned` (pyarrow blocks, case buckets, merge); both write
case-partitioned Parquet parts with the same part size. Both sides run at a quarter of the size and at the full
size, to show which peak follows the file and which stays put. The sides alternate for REPEAT rounds (the same repeats
for both sides of the ratio); times are the best of those, RSS the largest. Both outputs are compared by a
content hash of every part, row counts and the quality report's counts.

Run: nice -n 5 .venv/bin/python bench/ingest_stream.py   (writes bench/results/ingest_stream.json)
DESKPILOT_BENCH_STREAM_EVENTS sets the log size.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Results, data_dir

N_EVENTS = int(os.environ.get("DESKPILOT_BENCH_STREAM_EVENTS", "5000000"))
BATCH = 1_000_000  # events simulated at a time
PART = 1_000_000  # events per Parquet part, both sides
CHUNK_MB = 16  # CSV block read at a time by the streaming side (the CLI's default)
BUCKET_MB = 32  # CSV size per case bucket on the streaming side (the CLI's default)
REPEAT = 2  # rounds; each runs both sides once
KEY = "bench-key"
SOURCE_NAMES = {"case_id": "Case ID", "activity": "Activity", "timestamp": "Complete Timestamp",
                "resource": "Resource", "group": "Team", "channel": "Channel"}


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def generate(csv: Path, n_events: int) -> dict[str, Any]:
    """Simulated batches (time windows overlapping, case ids distinct) as one CSV sorted by time."""
    import polars as pl

    from insight.eventlog.schema import CASE_ID, TIMESTAMP
    from insight.simulate import simulate_events

    t = time.perf_counter()
    frames, done, b = [], 0, 0
    while done < n_events:
        df = simulate_events(n_events=min(BATCH, n_events - done), seed=2000 + b).log.df
        df[CASE_ID] = f"S{b:03d}-" + df[CASE_ID].astype(str)
        cols = [c for c in SOURCE_NAMES if c in df.columns]
        frames.append(pl.from_pandas(df[cols].reset_index(drop=True)))
        done += len(df)
        b += 1
    frame = pl.concat(frames).sort(TIMESTAMP, maintain_order=True)
    frame = frame.with_columns(pl.col(TIMESTAMP).dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%d %H:%M:%S"))
    frame.rename({k: v for k, v in SOURCE_NAMES.items() if k in frame.columns}).write_csv(csv)
    cases = int(frame[CASE_ID].n_unique())
    return {"events": frame.height, "cases": cases, "bytes": csv.stat().st_size,
            "seconds": time.perf_counter() - t}


def _digest(out: Path) -> str:
    """A content hash of every part in manifest order (one part in memory at a time)."""
    import hashlib

    import pandas as pd

    h = hashlib.sha256()
    meta = json.loads((out / "_parts.json").read_text(encoding="utf-8"))
    for name in meta["parts"]:
        df = pd.read_parquet(out / name)
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    h.update(json.dumps(meta["case_attributes"]).encode())
    return h.hexdigest()[:16]


def child(side: str, csv: Path, out: Path, report: Path) -> None:
    """One side, timed from the call (imports excluded), its own peak RSS."""
    from insight.eventlog import ingest
    from insight.eventlog.stream import ingest_partitioned
    from insight.eventlog.writers import write_partitioned

    t = time.perf_counter()
    if side == "memory":
        log = ingest(csv, pseudonym_key=KEY)
        parts = write_partitioned(log, out, events_per_part=PART)
        q = log.quality
        assert q is not None
    else:
        res = ingest_partitioned(csv, out, pseudonym_key=KEY, events_per_part=PART, chunk_bytes=CHUNK_MB << 20,
                                 bucket_bytes=BUCKET_MB << 20)
        parts, q = res.parts, res.quality
        extra = {"chunks": res.chunks, "buckets": res.buckets}
    seconds = time.perf_counter() - t
    rss = _rss_gib()
    counts = {f.name: q.count(f.name) for f in q.fixes if f.name != "rows_reordered"}
    report.write_text(json.dumps({
        "seconds": seconds, "rss_gib": rss, "parts": len(parts), "rows_out": q.rows_out, "cases_out": q.cases_out,
        "counts": dict(sorted(counts.items())), "digest": _digest(out), **(extra if side == "stream" else {}),
    }))


def _child(*args: str) -> None:
    out = subprocess.run([sys.executable, __file__, *args], text=True, capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")


def _measure(tmp: Path, n_events: int, res: Results) -> None:
    """Both sides on one generated CSV of about n_events events, alternating for REPEAT rounds."""
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "stream": []}
    csv = tmp / f"events{n_events}.csv"
    _child("--generate", str(csv), str(n_events), str(tmp / "gen.json"))
    gen = json.loads((tmp / "gen.json").read_text())
    label = f"{gen['events']:,} events, {gen['bytes'] / 2**20:,.0f} MiB CSV"
    print(f"generated {label}, {gen['cases']:,} cases ({gen['seconds']:.0f} s)", flush=True)
    for r in range(REPEAT):
        for side in ("memory", "stream"):
            out = tmp / f"{side}{n_events}-{r}"
            rep = tmp / f"{side}{n_events}-{r}.json"
            _child("--side", side, str(csv), str(out), str(rep))
            runs[side].append(json.loads(rep.read_text()))
            print(f"round {r + 1} {side}: {runs[side][-1]['seconds']:.1f} s, "
                  f"{runs[side][-1]['rss_gib']:.2f} GiB", flush=True)
            shutil.rmtree(out)
    csv.unlink()
    mem, st = runs["memory"], runs["stream"]
    t_mem, t_st = min(x["seconds"] for x in mem), min(x["seconds"] for x in st)
    rss_mem, rss_st = max(x["rss_gib"] for x in mem), max(x["rss_gib"] for x in st)
    a, b = mem[-1], st[-1]
    keys = ("digest", "rows_out", "cases_out", "counts", "parts")
    diff = [k for k in keys if a[k] != b[k]]
    if diff:
        print("DIFFERENT:", diff, {k: (a[k], b[k]) for k in diff if k != "counts"})
    res.extra_env.setdefault("runs_s", {})[label] = {"memory": [round(x["seconds"], 2) for x in mem],
                                                     "stream": [round(x["seconds"], 2) for x in st]}
    res.extra_env.setdefault("stream_chunks_buckets", {})[label] = [b["chunks"], b["buckets"]]
    sec = f"seconds, best of {REPEAT}"
    res.add("ingest in memory + write parts", label, sec, t_mem)
    res.add("ingest --partitioned (streaming)", label, sec, t_st, t_mem)
    res.add("streaming / in-memory time", label, f"ratio of best-of-{REPEAT} times", t_st / t_mem)
    res.add("peak RSS, in memory", label, "GiB (max of runs)", rss_mem)
    res.add("peak RSS, streaming", label, "GiB (max of runs)", rss_st, rss_mem)
    res.add("streaming / in-memory peak RSS", label, "ratio", rss_st / rss_mem)
    res.add("events and report, streaming vs memory", label, f"{a['rows_out']:,} events, {a['parts']} parts",
            "DIFFERENT " + ",".join(diff) if diff else "equal", goal="equal")


def main() -> None:
    """Both sides at a quarter of the size and at the full size: the in-memory peak grows, the streaming one not."""
    data_dir()  # the house rule: every bench runs where the public data is
    res = Results("ingest_stream")
    res.extra_env.update({"part_events": PART, "chunk_mb": CHUNK_MB, "bucket_mb": BUCKET_MB, "repeat": REPEAT,
                          "generator": "insight.simulate, 1M-event batches, CSV sorted by time"})
    with tempfile.TemporaryDirectory(prefix="deskpilot-ingest-stream-") as tmp:
        for n in (N_EVENTS // 4, N_EVENTS):
            _measure(Path(tmp), n, res)
    res.write()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        info = generate(Path(sys.argv[2]), int(sys.argv[3]))
        Path(sys.argv[4]).write_text(json.dumps(info))
    elif len(sys.argv) > 1 and sys.argv[1] == "--side":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
