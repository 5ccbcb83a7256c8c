"""Mining at scale: 100M simulated events on a local Dask cluster (2 workers), checked against one process on a
10M sample of the same parts.

The log comes from deskpilot's simulator in batches of 1M events (each batch its own seed and case-id prefix, as
several regions of one help desk), streamed into case-partitioned Parquet parts of 1M events by
`write_partitioned` (memory: one batch and one part). Every side starts from parts on disk and runs the same miners
(extraction, process map with performance, variants, bottlenecks, handovers, KPIs, case labels):

- the sample: the first SAMPLE events' parts (a folder of links to them with its own manifest), mined by
  `mine_single` (read every part, encode, mine) in a fresh child process and by `mine_partitioned` on a
  LocalCluster of WORKERS worker processes (one thread each) driven by a fresh child process; the sides alternate
  (single, Dask, single, Dask, ...) REPEAT times each, the time is each side's best run, and the results of the
  last runs are compared field by field (every miner's JSON form, the per-case label table);
- the whole log: `mine_partitioned` on the same kind of cluster, once (one process cannot hold it), next to one
  more single-process run on the sample right before it, so the per-10M-events ratio compares one run with one run.

The cluster's start-up (processes, imports) is timed apart (a real cluster is already running). Peak memory is
ru_maxrss (the workers report theirs). DESKPILOT_BENCH_SCALE_EVENTS sets the size, DESKPILOT_BENCH_SCALE_SAMPLE the
sample; DESKPILOT_BENCH_SCALE_DIR keeps the generated parts in that folder for a later run (reused when the size
matches).

Run: nice -n 5 .venv/bin/python bench/scale.py   (writes bench/results/scale.json)
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Results  # noqa: I001  (bench scripts import their sibling)

N_EVENTS = int(os.environ.get("DESKPILOT_BENCH_SCALE_EVENTS", "100000000"))
SAMPLE = int(os.environ.get("DESKPILOT_BENCH_SCALE_SAMPLE", "10000000"))
BATCH = 1_000_000  # events simulated at a time
PART = 1_000_000  # events per Parquet part
WORKERS = 2
WORKER_MEMORY = "2.5GiB"  # per worker: above 70 % of it dask spills the label tables waiting there to disk
REPEAT = 2  # runs of each side, alternating (the same for both sides of the ratio)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def generate(out: Path, n_events: int) -> dict[str, Any]:
    """Simulated batches streamed into case-partitioned Parquet parts."""
    from insight.eventlog.schema import CASE_ID
    from insight.eventlog.writers import write_partitioned
    from insight.simulate import simulate_events

    counts = {"events": 0, "cases": 0}

    def batches() -> Any:
        b = 0
        while counts["events"] < n_events:
            df = simulate_events(n_events=min(BATCH, n_events - counts["events"]), seed=1000 + b).log.df
            df[CASE_ID] = f"R{b:03d}-" + df[CASE_ID].astype(str)
            counts["events"] += len(df)
            counts["cases"] += int(df[CASE_ID].nunique())
            b += 1
            yield df

    t = time.perf_counter()
    parts = write_partitioned(batches(), out, events_per_part=PART, name=f"simulated {n_events:,}")
    return {**counts, "target": n_events, "parts": len(parts), "seconds": time.perf_counter() - t,
            "rss_gib": _rss_gib()}


def _digest(result: Any, light: bool = False) -> dict[str, Any]:
    from insight.mining.report import _jsonable

    if light:  # the whole log: its figures, not its tables (nothing compares them)
        return {"n_cases": result.n_cases, "n_events": result.n_events, "timings": result.timings,
                "variants": result.variants.n_variants}
    miners = {k: _jsonable(getattr(result, k).to_dict()) if getattr(result, k) is not None else None
              for k in ("extraction", "process_map", "variants", "bottlenecks", "handovers", "kpis")}
    return {"miners": json.dumps(miners, sort_keys=False), "labels": result.labels.df,
            "segments": result.labels.segments, "lines": result.labels.lines,
            "n_cases": result.n_cases, "n_events": result.n_events, "timings": result.timings,
            "variants": result.variants.n_variants}


def child_single(parts: Path, out: Path) -> None:
    from insight.mining.distributed import mine_single

    t = time.perf_counter()
    result = mine_single(parts)
    seconds = time.perf_counter() - t
    with out.open("wb") as fh:
        pickle.dump({"seconds": seconds, "rss_gib": _rss_gib(), **_digest(result)}, fh)


def _warm() -> None:
    import insight.mining.distributed  # noqa: F401


def child_dask(parts: Path, out: Path, light: bool = False) -> None:
    from insight.mining.distributed import connect, mine_partitioned

    t = time.perf_counter()
    client = connect(workers=WORKERS, memory_limit=WORKER_MEMORY)
    client.wait_for_workers(WORKERS)
    client.run(_warm)  # the workers import deskpilot's miners once, as a running cluster has
    startup = time.perf_counter() - t
    t = time.perf_counter()
    result = mine_partitioned(parts, client)
    seconds = time.perf_counter() - t
    workers = client.run(_rss_gib)
    cluster = client.cluster
    client.close()
    cluster.close()
    with out.open("wb") as fh:
        pickle.dump({"seconds": seconds, "startup": startup, "rss_gib": _rss_gib(),
                     "worker_rss_gib": sorted(workers.values()), **_digest(result, light)}, fh)


def _child(*args: str) -> None:
    out = subprocess.run([sys.executable, __file__, *args], text=True, capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")


def _same(a: dict[str, Any], b: dict[str, Any]) -> str:
    import numpy as np
    import pandas as pd

    if a["miners"] != b["miners"]:
        return "DIFFERENT miners"
    try:
        pd.testing.assert_frame_equal(a["labels"], b["labels"], check_exact=True)
        if a["segments"] is not None or b["segments"] is not None:
            pd.testing.assert_frame_equal(a["segments"], b["segments"], check_exact=True)
    except AssertionError as exc:
        return "DIFFERENT labels: " + " ".join(str(exc).split())[:120]
    if a["lines"] != b["lines"] or not np.array_equal([a["n_cases"], a["n_events"]], [b["n_cases"], b["n_events"]]):
        return "DIFFERENT lines or counts"
    return "equal"


def _sample(parts: Path, out: Path, n_events: int) -> int:
    """A folder whose manifest lists the first parts holding `n_events` events (links, not copies)."""
    import pyarrow.parquet as pq

    meta = json.loads((parts / "_parts.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    chosen, total = [], 0
    for p in meta["parts"]:
        if total >= n_events:
            break
        (out / p).unlink(missing_ok=True)
        (out / p).symlink_to((parts / p).resolve())
        chosen.append(p)
        total += pq.ParquetFile(parts / p).metadata.num_rows
    (out / "_parts.json").write_text(json.dumps({**meta, "parts": chosen, "name": f"{meta.get('name')} (sample)"}))
    return total


def _parts_dir(tmp: Path) -> tuple[Path, bool]:
    keep = os.environ.get("DESKPILOT_BENCH_SCALE_DIR")
    parts = Path(keep) if keep else tmp / "parts"
    info = parts / "_generate.json"
    if not (info.is_file() and json.loads(info.read_text()).get("target") == N_EVENTS):
        _child("--generate", str(parts), str(N_EVENTS))
        return parts, True
    return parts, False


def main() -> None:
    """Generate, mine the sample both ways and the whole log on the cluster, compare, write scale.json."""
    res = Results("scale")
    res.extra_env.update({"workers": WORKERS, "threads_per_worker": 1, "worker_memory_limit": WORKER_MEMORY,
                          "part_events": PART, "repeat": REPEAT,
                          "generator": "insight.simulate, 1M-event batches"})
    with tempfile.TemporaryDirectory(prefix="deskpilot-scale-") as tmp_name:
        tmp = Path(tmp_name)
        parts, fresh = _parts_dir(tmp)
        gen = json.loads((parts / "_generate.json").read_text())
        # parts kept from an earlier run (DESKPILOT_BENCH_SCALE_DIR): the generate rows are that run's figures
        res.extra_env["parts_generated_in_this_run"] = fresh
        label = f"{gen['events']:,} events, {gen['cases']:,} cases"
        print(f"{label} in {gen['parts']} parts (generated in {gen['seconds']:.0f} s)", flush=True)
        sample = tmp / "sample"
        n_sample = _sample(parts, sample, SAMPLE)
        singles, dasks = [], []
        for r in range(REPEAT):
            _child("--single", str(sample), str(tmp / f"single{r}.pkl"))
            singles.append(pickle.loads((tmp / f"single{r}.pkl").read_bytes()))
            _child("--dask", str(sample), str(tmp / f"dask{r}.pkl"))
            dasks.append(pickle.loads((tmp / f"dask{r}.pkl").read_bytes()))
            print(f"sample round {r + 1}: single {singles[-1]['seconds']:.1f} s, Dask {dasks[-1]['seconds']:.1f} s",
                  flush=True)
        slabel = f"{n_sample:,} events (first parts of the log)"
        single = {**singles[-1], "seconds": min(x["seconds"] for x in singles),
                  "rss_gib": max(x["rss_gib"] for x in singles)}
        dask = {**dasks[-1], "seconds": min(x["seconds"] for x in dasks), "rss_gib": max(x["rss_gib"] for x in dasks),
                "startup": min(x["startup"] for x in dasks),
                "worker_rss_gib": max((x["worker_rss_gib"] for x in dasks), key=max)}
        big = None
        if gen["events"] > n_sample:
            _child("--single", str(sample), str(tmp / "single-next.pkl"))
            single_next = pickle.loads((tmp / "single-next.pkl").read_bytes())
            _child("--dask", str(parts), str(tmp / "dask-all.pkl"), "--light")
            big = pickle.loads((tmp / "dask-all.pkl").read_bytes())
            print(f"whole log: Dask {big['seconds']:.1f} s; sample single right before {single_next['seconds']:.1f} s",
                  flush=True)
        res.extra_env["runs_s"] = {"sample single": [round(x["seconds"], 2) for x in singles],
                                   "sample dask": [round(x["seconds"], 2) for x in dasks]}
    sec = f"seconds, best of {REPEAT}"
    res.add("generate + write parts (streamed)", label, "seconds", gen["seconds"])
    res.add("generate + write parts (streamed)", label, "peak RSS GiB", gen["rss_gib"])
    res.add("mine, single process", slabel, sec, single["seconds"])
    res.add("mine, Dask 2 workers", slabel, sec, dask["seconds"], single["seconds"])
    res.add("Dask / single-process time", slabel, f"ratio of best-of-{REPEAT} times",
            dask["seconds"] / single["seconds"], goal="<= 1.5")
    res.add("Dask cluster start-up", slabel, f"seconds, best of {REPEAT}", dask["startup"])
    res.add("peak RSS, single process", slabel, "GiB", single["rss_gib"])
    res.add("peak RSS per Dask worker", slabel, "GiB (max of workers)", max(dask["worker_rss_gib"]), goal="< 4")
    res.add("peak RSS, Dask client", slabel, "GiB", dask["rss_gib"])
    res.add("results Dask vs single process", slabel, f"{single['variants']:,} variants", _same(single, dask),
            goal="equal")
    res.extra_env["timings_sample_single_s"] = {k: round(v, 3) for k, v in single["timings"].items()}
    res.extra_env["timings_sample_dask_s"] = {k: round(v, 3) for k, v in dask["timings"].items()}
    if big is not None:
        per10 = big["seconds"] * 10_000_000 / big["n_events"]
        single10 = single_next["seconds"] * 10_000_000 / single_next["n_events"]
        res.add("mine, Dask 2 workers", label, "seconds, one run", big["seconds"])
        res.add("mine, Dask 2 workers", label, "seconds per 10M events, one run", per10, single10)
        res.add("Dask per 10M events / single process on the sample", label,
                "ratio of one run each (single: the sample, run right before)", per10 / single10, goal="<= 1.5")
        res.add("peak RSS per Dask worker", label, "GiB (max of workers)", max(big["worker_rss_gib"]), goal="< 4")
        res.add("peak RSS, Dask client", label, "GiB", big["rss_gib"])
        res.add("variants", label, "count", big["variants"])
        res.extra_env["timings_all_dask_s"] = {k: round(v, 3) for k, v in big["timings"].items()}
        res.extra_env["worker_rss_gib_all"] = [round(x, 3) for x in big["worker_rss_gib"]]
    res.extra_env["worker_rss_gib_sample"] = [round(x, 3) for x in dask["worker_rss_gib"]]
    res.write()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        target = Path(sys.argv[2])
        info = generate(target, int(sys.argv[3]))
        (target / "_generate.json").write_text(json.dumps(info))
    elif len(sys.argv) > 1 and sys.argv[1] == "--single":
        child_single(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--dask":
        child_dask(Path(sys.argv[2]), Path(sys.argv[3]), light="--light" in sys.argv[4:])
    else:
        main()
