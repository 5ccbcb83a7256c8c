"""Training at scale by case sampling (issue 19): what a stratified case sample costs the prefix models.

Run: `.venv/bin/python bench/train_scale.py` (no args). Writes bench/results/train_scale.json.
DESKPILOT_BENCH_EVENTS sets the simulated log's size, DESKPILOT_BENCH_REPEATS the repeats per configuration,
DESKPILOT_BENCH_LOGS the logs (comma-separated: simulated, helpdesk, bpic2013).

Protocol: each log is split by case start as the product splits it (simulated: oldest 80 % of cases train, newest
20 % test; Helpdesk and BPIC 2013: the rama2021 ordered split files, as bench/predictors.py). Next activity
(accuracy over every test prefix, end class included) and remaining time (MAE hours over every test prefix) are fitted
with the product defaults on 100 % of the training cases, on stratified samples (whole cases, each start week keeping
its share: `insight.models.split.sample_cases_by_window`) and on plain uniform case samples at the same fractions
(`window=None`), always scored on the same test cases (the test part is never sampled). Every side gets the same
number of repeats, interleaved round by round; repeat r samples with seed SEED + r (the 100 % side refits the same
cases, so only its time varies). Each fit runs in a fresh child process (spawn) that reads only its training part:
`peak RSS` is that child's high-water mark (VmHWM) after reading its part and fitting, so it includes the
interpreter and the libraries (`RSS after imports` is the same child before it read anything); fit seconds are the
wall time of `fit()` alone (prefix encoding, early stopping and the refit on all training cases included). The
product trains on one LightGBM thread up to 10,000 prefixes and on two above; the side "100%, 1 thread" is the same
full fit held to one thread, so the time a sample saves is not confused with what the second thread costs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

try:
    from bench._common import Results, data_dir
except ImportError:  # run as a script: bench/ is on sys.path, the repo is added by _common
    from _common import Results, data_dir  # type: ignore[no-redef]

SEED = 7
FRACTIONS = (0.5, 0.25, 0.1)
WINDOW = "7D"
EVENTS = int(os.environ.get("DESKPILOT_BENCH_EVENTS", "60000"))
REPEATS = int(os.environ.get("DESKPILOT_BENCH_REPEATS", "2"))
LOGS = tuple(x for x in os.environ.get("DESKPILOT_BENCH_LOGS", "helpdesk,simulated").split(",") if x)
WEEKS = 26
# Public logs: (folder, train file, test file, preset, event attributes) as in bench/predictors.py.
PUBLIC = {
    "helpdesk": ("helpdesk/rama2021_split", "train_val_Helpdesk.xes.gz", "test_Helpdesk.xes.gz", "helpdesk_xes",
                 ["resource"]),
    "bpic2013": ("bpic2013/rama2021_split", "train_val_bpi_challenge_2013_incidents.xes.gz",
                 "test_bpi_challenge_2013_incidents.xes.gz", "bpic2013_xes",
                 ["resource", "group", "org:role", "organization involved", "impact", "product"]),
}
TASKS = ("next_activity", "remaining_time")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def _child(task: str, train_path: str, test_path: str, attrs: list[str], threads: int, out: Any) -> None:
    """One fit in a fresh interpreter: read the training part, fit, note the memory, then score the test part."""
    from insight.models.next_activity import NextActivityPredictor
    from insight.models.remaining_time import RemainingTimePredictor

    rss_imports = _status_kib("VmRSS")
    with open(train_path, "rb") as f:
        train = pickle.load(f)
    score: dict[str, Any]
    cpu0, t0 = time.process_time(), time.perf_counter()
    if task == "next_activity":
        na = NextActivityPredictor(event_attributes=attrs, seed=SEED, num_threads=threads).fit(train)
        fit_s, cpu_s, peak = time.perf_counter() - t0, time.process_time() - cpu0, _status_kib("VmHWM")
        with open(test_path, "rb") as f:
            test = pickle.load(f)
        m = na.evaluate(train, test)
        score = {"accuracy": m.accuracy, "bigram": m.baseline_bigram_accuracy, "n_prefixes": m.n_prefixes,
                 "rounds": int(na.n_iter_)}
    else:
        rt = RemainingTimePredictor(event_attributes=attrs, seed=SEED, num_threads=threads).fit(train)
        fit_s, cpu_s, peak = time.perf_counter() - t0, time.process_time() - cpu0, _status_kib("VmHWM")
        with open(test_path, "rb") as f:
            test = pickle.load(f)
        r = rt.evaluate(test)
        score = {"mae_hours": r.mae_hours, "median_baseline": r.baseline_median_per_prefix_length_mae_hours,
                 "n_prefixes": r.n_prefixes, "rounds": int(rt.n_iter_)}
    out.put({"fit_s": fit_s, "cpu_s": cpu_s, "peak_mib": peak / 1024, "rss_imports_mib": rss_imports / 1024,
             "n_cases": train.n_cases, "n_events": train.n_events, **score})


def _fit_in_child(task: str, train_path: Path, test_path: Path, attrs: list[str], threads: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(task, str(train_path), str(test_path), attrs, threads, q))
    p.start()
    try:
        got: dict[str, Any] = q.get(timeout=3600)
    finally:
        p.join()
    if p.exitcode != 0:
        raise SystemExit(f"train_scale: the {task} child exited with {p.exitcode}")
    return got


def _split(name: str) -> tuple[Any, Any, str, list[str]]:
    from insight.eventlog import read_log
    from insight.eventlog.schema import EventLog
    from insight.models.split import split_log

    if name == "simulated":
        from insight.simulate import simulate_events

        log = simulate_events(n_events=EVENTS, seed=SEED, weeks=WEEKS).log
        train, test = split_log(log, test_fraction=0.2)
        # The product's defaults: no trace-level attributes unless declared; resource and group as events carry them.
        return train, test, f"simulated {log.n_events:,} ev, {WEEKS} wk", ["resource", "group"]
    folder, tr, te, preset, attrs = PUBLIC[name]
    root = data_dir() / "process_logs" / folder

    def read(path: Path) -> Any:
        lg = read_log(path, preset=preset)
        df = lg.df.dropna(subset=["timestamp"]).reset_index(drop=True)
        return EventLog(df, name=lg.name, case_attributes=list(lg.case_attributes))

    train, test = read(root / tr), read(root / te)
    return train, test, f"{name} rama2021 split", [a for a in attrs if a in train.df.columns]


def run_log(res: Results, name: str, tmp: Path) -> None:
    from insight.models.split import case_starts, sample_cases_by_window

    train, test, data, attrs = _split(name)
    test_path = tmp / f"{name}-test.pkl"
    test_path.write_bytes(pickle.dumps(test))
    res.add("case sample", data, "train cases / events / test cases",
            f"{train.n_cases} / {train.n_events} / {test.n_cases}")
    sides: dict[str, list[Path]] = {}
    full_path = tmp / f"{name}-full.pkl"
    full_path.write_bytes(pickle.dumps(train))
    sides["100%"] = [full_path] * REPEATS
    # The product trains LightGBM on one thread up to SMALL_TRAIN_ROWS prefixes and on two above: the same 100 %
    # fit on one thread separates what the sample saves from what the thread switch costs on a loaded box.
    sides["100%, 1 thread"] = [full_path] * REPEATS
    starts = case_starts(train)
    week = ((starts - starts.min()) // pd.Timedelta(WINDOW))
    full_share = week.value_counts(normalize=True)
    drift: dict[str, list[float]] = {}
    for frac in FRACTIONS:
        for label, window in (("stratified", WINDOW), ("uniform", None)):
            key = f"{label} {frac:.0%}"
            sides[key], drift[key] = [], []
            for r in range(REPEATS):
                t0 = time.perf_counter()
                sample = sample_cases_by_window(train, fraction=frac, window=window, seed=SEED + r)
                sample_s = time.perf_counter() - t0
                s_starts = case_starts(sample)
                share = ((s_starts - starts.min()) // pd.Timedelta(WINDOW)).value_counts(
                    normalize=True).reindex(full_share.index, fill_value=0.0)
                drift[key].append(float((share - full_share).abs().max()))
                path = tmp / f"{name}-{label}-{frac}-{r}.pkl"
                path.write_bytes(pickle.dumps(sample))
                sides[key].append(path)
            res.add("case sample", data, f"{key}: sampler seconds (last repeat)", sample_s)
            res.add("case sample", data, f"{key}: worst week share gap, points (max over repeats)",
                    100 * max(drift[key]))
    got: dict[tuple[str, str], list[dict[str, Any]]] = {(t, k): [] for t in TASKS for k in sides}
    for r in range(REPEATS):  # interleaved: every side once per round, so all share the machine's busy moments
        for task in TASKS:
            for key, paths in sides.items():
                threads = 1 if key.endswith("1 thread") else 2
                got[(task, key)].append(_fit_in_child(task, paths[r], test_path, attrs, threads))
                print(f"    {name} {task} {key} repeat {r + 1}/{REPEATS}: {got[(task, key)][-1]}", flush=True)
    for task in TASKS:
        full = got[(task, "100%")]
        metric = "accuracy" if task == "next_activity" else "mae_hours"
        label = "accuracy (incl. end)" if task == "next_activity" else "MAE hours"
        full_value = statistics.mean(x[metric] for x in full)
        full_fit = min(x["fit_s"] for x in full)
        tname = "next activity" if task == "next_activity" else "remaining time"
        ref = "bigram" if task == "next_activity" else "median_baseline"
        res.add(tname, data, f"100%: {label} (baseline: {ref}, on 100%)", full_value, full[0][ref])
        for key in sides:
            runs = got[(task, key)]
            vals = [x[metric] for x in runs]
            d = f"{data}, {key}"
            if not key.startswith("100%"):
                res.add(tname, d, f"{label} mean of {REPEATS} samples (baseline: 100%)", statistics.mean(vals),
                        full_value)
                res.add(tname, d, f"{label} min..max over samples", f"{min(vals):.4f}..{max(vals):.4f}")
                res.add(tname, d, f"{ref} on the same sample (mean)", statistics.mean(x[ref] for x in runs))
            res.add(tname, d, f"fit seconds, best of {REPEATS} (baseline: 100%)", min(x["fit_s"] for x in runs),
                    full_fit)
            res.add(tname, d, "fit CPU seconds, best", min(x["cpu_s"] for x in runs))
            res.add(tname, d, "peak RSS MiB of the fit child, max (baseline: 100%)",
                    max(x["peak_mib"] for x in runs), max(x["peak_mib"] for x in full))
            res.add(tname, d, "RSS MiB after imports (same child)", min(x["rss_imports_mib"] for x in runs))
            res.add(tname, d, "train cases / boosting rounds (last repeat)",
                    f"{runs[-1]['n_cases']} / {runs[-1]['rounds']}")


def main() -> None:
    """Run every log and write bench/results/train_scale.json."""
    res = Results("train_scale", extra_env={"seed": SEED, "repeats": REPEATS, "fractions": list(FRACTIONS),
                                            "window": WINDOW, "simulated_events_asked": EVENTS,
                                            "logs": list(LOGS)})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train_scale-") as tmp:
        for i, name in enumerate(LOGS):
            run_log(res, name, Path(tmp))
            res.extra_env["total_seconds"] = round(time.perf_counter() - t0, 1)
            res.extra_env["logs_done"] = list(LOGS[:i + 1])
            res.write()  # after every log, so a run cut short keeps what it measured


if __name__ == "__main__":
    main()
