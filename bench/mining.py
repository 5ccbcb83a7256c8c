"""Mining speed: deskpilot vs pm4py on the same logs in one run, with an identity check of the shared figures.

Times DFG + variants + performance DFG + handover-of-work network (the four pm4py calls
`discover_dfg`, `get_variants`, `discover_performance_dfg`, `discover_handover_of_work_network`) against
deskpilot's `encode` + `discover_process_map` + `mine_variants` + `handover_network` (which also compute
more: p90s, cases per edge, sojourn times, variant cost). Logs: BPIC 2012 (262k events) and a ~1M-event
simulated support log. Peak memory of the deskpilot side on 10M synthetic events is measured in a child
process (ru_maxrss). Reading / converting logs is not timed on either side.

Both sides run the same number of times (REPEAT), interleaved (pm4py, deskpilot, pm4py, ...), so a busy moment of
the shared machine hits both alike; every time reported is the best of those REPEAT runs, per task and in total.

Run: `nice -n 5 .venv/bin/python bench/mining.py`.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from _common import REPO, Results, data_dir  # noqa: I001  (bench scripts import their sibling)

from insight.eventlog.pm4py_bridge import from_pm4py, read_xes_frame, to_pm4py
from insight.eventlog.schema import EventLog
from insight.mining import discover_process_map, encode, handover_network, mine_variants

REPEAT = 3  # runs of each side on each log (the same for both sides of every ratio)


def run_pm4py(frame: pd.DataFrame, handover_frame: pd.DataFrame | None) -> dict[str, Any]:
    """The four pm4py calls, each timed (handover on `handover_frame`: the events that have a resource)."""
    import pm4py

    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["dfg"], out["sa"], out["ea"] = pm4py.discover_dfg(frame)
    out["t_dfg"] = time.perf_counter() - t
    t = time.perf_counter()
    out["variants"] = pm4py.get_variants(frame)
    out["t_variants"] = time.perf_counter() - t
    t = time.perf_counter()
    out["perf"], _, _ = pm4py.discover_performance_dfg(frame)
    out["t_perf"] = time.perf_counter() - t
    t = time.perf_counter()
    out["handover"] = (
        pm4py.discover_handover_of_work_network(handover_frame, beta=0).connections
        if handover_frame is not None
        else {}
    )
    out["t_handover"] = time.perf_counter() - t
    out["t_total"] = out["t_dfg"] + out["t_variants"] + out["t_perf"] + out["t_handover"]
    return out


def run_ours(log: EventLog, *, with_resource: bool) -> dict[str, Any]:
    """deskpilot's side: one encoding shared by the map (DFG + performance), variants and handovers."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    enc = encode(log)
    out["t_encode"] = time.perf_counter() - t
    t = time.perf_counter()
    out["map"] = discover_process_map(enc=enc)
    out["t_map"] = time.perf_counter() - t
    t = time.perf_counter()
    out["variants"] = mine_variants(enc=enc)
    # pm4py's get_variants returns {variant: count}; the same dict is built inside our timing too (the table's
    # Variant objects are lazy, so without this the dict would be built outside the timed block).
    out["variant_counts"] = out["variants"].counts()
    out["t_variants"] = time.perf_counter() - t
    t = time.perf_counter()
    out["handover"] = handover_network(enc=enc) if with_resource else None
    out["t_handover"] = time.perf_counter() - t
    out["t_total"] = out["t_encode"] + out["t_map"] + out["t_variants"] + out["t_handover"]
    return out


def compare(p: dict[str, Any], o: dict[str, Any]) -> dict[str, bool]:
    """Which shared figures are identical (counts exactly; times to 1e-9 relative)."""
    pm = o["map"]
    dfg_ok = pm.dfg() == dict(p["dfg"]) and pm.start_activities == dict(p["sa"]) and pm.end_activities == dict(p["ea"])
    var_ok = o["variant_counts"] == dict(p["variants"])
    edges = {(e.source, e.target): e for e in pm.edges}
    perf_ok = set(edges) == set(p["perf"]) and all(
        math.isclose(edges[k].mean_s, v["mean"], rel_tol=1e-9, abs_tol=1e-6)
        and math.isclose(edges[k].median_s, v["median"], rel_tol=1e-9, abs_tol=1e-6)
        and math.isclose(edges[k].max_s, v["max"], rel_tol=1e-9, abs_tol=1e-6)
        for k, v in p["perf"].items()
    )
    out = {"dfg counts": dfg_ok, "variant counts": var_ok, "perf dfg mean/median/max": perf_ok}
    if o["handover"] is not None:
        ours = o["handover"].shares()
        theirs = p["handover"]
        out["handover shares"] = set(ours) == set(theirs) and all(
            math.isclose(ours[k], v, rel_tol=1e-9) for k, v in theirs.items()
        )
    return out


def measure(res: Results, name: str, log: EventLog, frame: pd.DataFrame, *, repeat: int = REPEAT) -> None:
    """Time both sides `repeat` times each, interleaved, on one log; check identity, add rows."""
    with_resource = log.has("resource")
    print(f"\n== {name}: {log.n_events:,} events, {log.n_cases:,} cases", flush=True)
    # pm4py's handover crashes on events without a resource (it sorts variant strings mixed with NaN), so it
    # gets a frame without them, prepared outside the timing; ours skips such events itself (same definition).
    hf = frame.dropna(subset=["org:resource"]) if with_resource else None
    if hf is not None and len(hf) < len(frame):
        print(f"   ({len(frame) - len(hf):,} events without a resource left out of pm4py's handover input)")
    p_runs: list[dict[str, Any]] = []
    o_runs: list[dict[str, Any]] = []
    for _ in range(repeat):  # interleaved: both sides see the same stretch of the shared machine
        p_runs.append(run_pm4py(frame, hf))
        o_runs.append(run_ours(log, with_resource=with_resource))
    p = min(p_runs, key=lambda r: r["t_total"])
    o = min(o_runs, key=lambda r: r["t_total"])
    tp, to = p["t_total"], o["t_total"]

    # per-task rows: the fastest of the repeats for each task on its own, on both sides alike
    def best(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> float:
        return min(sum(r[k] for k in keys) for r in runs)

    unit = f"seconds, best of {repeat} (ours vs pm4py)"
    res.add("dfg + performance dfg", name, unit, best(o_runs, ("t_encode", "t_map")),
            best(p_runs, ("t_dfg", "t_perf")))
    res.add("variants", name, unit, best(o_runs, ("t_variants",)), best(p_runs, ("t_variants",)))
    res.add("handover network", name, unit, best(o_runs, ("t_handover",)), best(p_runs, ("t_handover",)))
    res.add("DFG+variants+perf+handover", name, unit, to, tp)
    res.add("DFG+variants+perf+handover", name, f"speedup x (pm4py / ours, best of {repeat} each)", tp / to, None,
            ">= 20x")
    for what, ok in compare(p, o).items():
        res.add(f"identical: {what}", name, "bool", ok, None, "True")


def synthetic_log(n_events: int, *, seed: int = 3, categorical: bool = False) -> EventLog:
    """A support-like log of ~n_events: Zipf-distributed variant templates with noise, sticky resources."""
    rng = np.random.default_rng(seed)
    n_act, n_res, n_templates = 40, 300, 3000
    tmpl_len = rng.integers(3, 18, n_templates)
    tmpl = [rng.integers(0, n_act, k) for k in tmpl_len]
    weights = 1.0 / np.arange(1, n_templates + 1) ** 1.1
    n_cases = int(n_events / float(np.dot(weights / weights.sum(), tmpl_len)))
    pick = rng.choice(n_templates, size=n_cases, p=weights / weights.sum())
    lens = tmpl_len[pick]
    flat = np.concatenate(tmpl)
    tstart = np.r_[0, np.cumsum(tmpl_len)[:-1]]
    case = np.repeat(np.arange(n_cases), lens)
    starts = np.r_[0, np.cumsum(lens)[:-1]]
    pos = np.arange(len(case)) - np.repeat(starts, lens)
    act = flat[tstart[pick][case] + pos]
    noise = rng.random(len(act)) < 0.03
    act[noise] = rng.integers(0, n_act, int(noise.sum()))
    # resources stay with the case for a while: a new resource only on ~40% of events (and every case start)
    change = (rng.random(len(act)) < 0.4) | (pos == 0)
    res_draw = rng.integers(0, n_res, len(act))
    last_change = np.maximum.accumulate(np.where(change, np.arange(len(act)), 0))
    res = res_draw[last_change]
    gaps = rng.exponential(3600.0, len(act)).astype(np.int64) + 1
    gaps[pos == 0] = 0
    cum = np.cumsum(gaps)
    base = rng.integers(0, 365 * 86400, n_cases)
    secs = base[case] + cum - cum[np.repeat(starts, lens)]
    ts = pd.Series(pd.to_datetime(secs, unit="s", utc=True).as_unit("us"))
    case_labels = np.array([f"case{i}" for i in range(n_cases)], dtype=object)
    act_labels = np.array([f"activity {i}" for i in range(n_act)], dtype=object)
    res_labels = np.array([f"agent {i}" for i in range(n_res)], dtype=object)

    def col(codes: np.ndarray, labels: np.ndarray) -> pd.Series:
        if categorical:
            return pd.Series(pd.Categorical.from_codes(codes, categories=labels))
        return pd.Series(labels[codes], dtype="str")

    df = pd.DataFrame({"case_id": col(case, case_labels), "activity": col(act, act_labels),
                       "timestamp": ts, "resource": col(res, res_labels)})
    return EventLog(df, name=f"synthetic {n_events}")


def memory_child(n_events: int) -> None:
    """Child process: build a log of n_events, run deskpilot's side, print RSS figures as JSON."""
    t = time.perf_counter()
    log = synthetic_log(n_events)
    gen_s = time.perf_counter() - t
    rss_log = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    t = time.perf_counter()
    o = run_ours(log, with_resource=True)
    run_s = time.perf_counter() - t
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"events": log.n_events, "cases": log.n_cases, "variants": o["variants"].n_variants,
                      "gen_s": gen_s, "run_s": run_s, "rss_after_log_gib": rss_log, "rss_peak_gib": rss_peak}))


def main() -> None:
    """Run all measurements and write bench/results/mining.json."""
    res = Results("mining")
    d = data_dir()
    from pm4py.util import constants

    constants.SHOW_PROGRESS_BAR = False

    frame = read_xes_frame(d / "process_logs" / "bpic2012" / "BPI_Challenge_2012.xes.gz")
    log = from_pm4py(frame, name="bpic2012")
    measure(res, "BPIC 2012", log, frame)
    del frame, log

    try:
        from insight.simulate.engine import simulate_events

        sim_log = simulate_events(n_events=1_000_000, seed=11).log
        sim_name = "simulated ~1M"
    except ImportError:
        sim_log = synthetic_log(1_000_000)
        sim_name = "synthetic ~1M"
    sim_frame = to_pm4py(sim_log)
    measure(res, sim_name, sim_log, sim_frame)
    del sim_frame, sim_log

    syn = synthetic_log(1_000_000)
    measure(res, "synthetic 1M (300 agents)", syn, to_pm4py(syn))
    del syn

    print("\n== peak memory, 10M synthetic events (child process)", flush=True)
    out = subprocess.run([sys.executable, __file__, "--memory-child", "10000000"], capture_output=True, text=True,
                         cwd=REPO, check=False)
    if out.returncode != 0:
        print(out.stderr[-3000:])
        res.add("peak RSS, 10M events", "synthetic 10M", "GiB", f"failed rc={out.returncode}", None, "< 24 GiB")
    else:
        m = json.loads(out.stdout.strip().splitlines()[-1])
        res.add("peak RSS incl. the log, 10M events", f"synthetic {m['events']:,}", "GiB", m["rss_peak_gib"], None,
                "well < 24 GiB")
        res.add("RSS of the log frame alone", f"synthetic {m['events']:,}", "GiB", m["rss_after_log_gib"])
        res.add("DFG+variants+perf+handover", f"synthetic {m['events']:,}", "seconds, one run (ours; pm4py not run)", m["run_s"])
        res.extra_env["memory_10m"] = m
    res.write()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        memory_child(int(sys.argv[2]))
    else:
        main()
