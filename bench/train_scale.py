"""Training at scale by case sampling (issue 19): what a stratified case sample costs the prefix models and the router.

Run: `.venv/bin/python bench/train_scale.py` (no args). Writes bench/results/train_scale.json (prefix models) and
bench/results/train_scale_router.json (resolving-team router), each only when its tasks ran.
DESKPILOT_BENCH_EVENTS sets the simulated log's size, DESKPILOT_BENCH_REPEATS the repeats per configuration,
DESKPILOT_BENCH_LOGS the logs (comma-separated: simulated, helpdesk, bpic2013, servicenow), DESKPILOT_BENCH_TASKS the
tasks (comma-separated: next_activity, remaining_time, router; default all).

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

Router: the same sides, seeds, rounds and child processes, with the product's own sampling path
(`train_router(sample_fraction=..., sample_window=...)`: whole labelled cases of the training part sampled per creation
window, `sample_window=None` for the uniform sample; the newest 20 % of labelled cases are the test cases, never
sampled). It is fitted and scored as bench/predictors.py fits it (its ROUTERS features and logs, ROUTER_PARAMS, live
memory), so the 100 % rows are that bench's figures; the simulated log is trained as the product trains it (its
ticket table: the case attributes known at creation and the ticket text; flows/training.py). Reported: accuracy %
as shipped (and on reassigned cases) next to the best trivial rule fitted on the same training cases and scored on
the same test cases, both for the 100 % side and each sample (the rules read the mined first team: servable only
where it is among the features, which the rows say). `fit seconds` is the time inside `TeamRouter.fit` (candidate
and C selection on the validation slice included); `train_router seconds` adds building the case table, scoring the
test cases, every candidate and the rules. The child reads the
whole log (train_router splits it), so its peak RSS holds the test cases too. The router has no thread setting
(scikit-learn's lbfgs), so there is no one-thread side. The router's seed only reaches LogisticRegression's
random_state, which lbfgs does not use: repeat r passes seed SEED + r to draw its sample, and the fit is the same.
The router's default logs are the simulated one and Helpdesk's team log; bpic2013 and servicenow, whose router
fits take minutes each in bench/predictors.py, run only when named in DESKPILOT_BENCH_LOGS.
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
LOGS_ASKED = os.environ.get("DESKPILOT_BENCH_LOGS")
LOGS = tuple(x for x in (LOGS_ASKED or "helpdesk,simulated").split(",") if x)
WEEKS = 26
# Public logs: (folder, train file, test file, preset, event attributes) as in bench/predictors.py.
PUBLIC = {
    "helpdesk": ("helpdesk/rama2021_split", "train_val_Helpdesk.xes.gz", "test_Helpdesk.xes.gz", "helpdesk_xes",
                 ["resource"]),
    "bpic2013": ("bpic2013/rama2021_split", "train_val_bpi_challenge_2013_incidents.xes.gz",
                 "test_bpi_challenge_2013_incidents.xes.gz", "bpic2013_xes",
                 ["resource", "group", "org:role", "organization involved", "impact", "product"]),
}
PREFIX_TASKS = ("next_activity", "remaining_time")
TASKS = tuple(x for x in os.environ.get("DESKPILOT_BENCH_TASKS", "next_activity,remaining_time,router").split(",") if x)
# Logs the router runs on unless DESKPILOT_BENCH_LOGS names others.
ROUTER_DEFAULT_LOGS = ("simulated", "helpdesk")


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


def _in_child(what: str, target: Any, *args: Any) -> dict[str, Any]:
    """`target(*args, queue)` in a fresh spawned process; what it put on the queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    try:
        got: dict[str, Any] = q.get(timeout=3600)
    finally:
        p.join()
    if p.exitcode != 0:
        raise SystemExit(f"train_scale: the {what} child exited with {p.exitcode}")
    return got


def _fit_in_child(task: str, train_path: Path, test_path: Path, attrs: list[str], threads: int) -> dict[str, Any]:
    return _in_child(task, _child, task, str(train_path), str(test_path), attrs, threads)


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
    got: dict[tuple[str, str], list[dict[str, Any]]] = {(t, k): [] for t in PREFIX_TASKS for k in sides}
    tasks = [t for t in PREFIX_TASKS if t in TASKS]
    for r in range(REPEATS):  # interleaved: every side once per round, so all share the machine's busy moments
        for task in tasks:
            for key, paths in sides.items():
                threads = 1 if key.endswith("1 thread") else 2
                got[(task, key)].append(_fit_in_child(task, paths[r], test_path, attrs, threads))
                print(f"    {name} {task} {key} repeat {r + 1}/{REPEATS}: {got[(task, key)][-1]}", flush=True)
    for task in tasks:
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


def _router_child(log_path: str, feats: list[str] | None, frac: float | None, window: str | None, seed: int,
                  out: Any) -> None:
    """One router fit in a fresh interpreter, as bench/predictors.py trains it, on a case sample or on every case."""
    try:
        from bench.predictors import ROUTER_LIVE_MEMORY, ROUTER_PARAMS
    except ImportError:  # run as a script
        from predictors import ROUTER_LIVE_MEMORY, ROUTER_PARAMS  # type: ignore[no-redef]
    from insight.models.router import RULES, TeamRouter
    from insight.training import train_router

    rss_imports = _status_kib("VmRSS")
    with open(log_path, "rb") as f:
        log, tickets = pickle.load(f)
    inner = {"s": 0.0, "cpu": 0.0, "n": 0}
    fit = TeamRouter.fit

    def timed_fit(self: Any, *a: Any, **k: Any) -> Any:
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            return fit(self, *a, **k)
        finally:
            inner["s"] += time.perf_counter() - t0
            inner["cpu"] += time.process_time() - c0
            inner["n"] += 1

    TeamRouter.fit = timed_fit  # type: ignore[method-assign]
    sample: dict[str, Any] = {} if frac is None else {"sample_fraction": frac, "sample_window": window}
    t0 = time.perf_counter()
    m = train_router(log=log, tickets=tickets, features=feats, seed=seed, params=ROUTER_PARAMS,
                     live_memory=ROUTER_LIVE_MEMORY, refit=False, **sample).metrics
    total_s, peak = time.perf_counter() - t0, _status_kib("VmHWM")
    best = max(RULES, key=lambda k: m[f"baseline_{k}_accuracy"])
    out.put({"fit_s": inner["s"], "cpu_s": inner["cpu"], "n_fits": inner["n"], "total_s": total_s,
             "peak_mib": peak / 1024, "rss_imports_mib": rss_imports / 1024,
             "accuracy": 100 * m["accuracy"], "accuracy_reassigned": 100 * m["accuracy_reassigned"],
             "rule": best, "rule_accuracy": 100 * m[f"baseline_{best}_accuracy"],
             "rule_accuracy_reassigned": 100 * m[f"baseline_{best}_accuracy_reassigned"],
             "selected": m["selected"], "n_test": m["n_cases"], "first_team_column": m["first_team_column"]})


def _router_in_child(log_path: Path, feats: list[str] | None, frac: float | None, window: str | None,
                     seed: int) -> dict[str, Any]:
    return _in_child("router", _router_child, str(log_path), feats, frac, window, seed)


def _router_log(name: str) -> tuple[Any, Any, str, list[str] | None]:
    """The log the router trains on, its ticket table (None: features from the log), its label and its creation-time
    features (None: the product's default from the ticket table; bench/predictors.py's for public logs)."""
    if name == "simulated":
        from insight.simulate import simulate_events

        sim = simulate_events(n_events=EVENTS, seed=SEED, weeks=WEEKS)
        return sim.log, sim.tickets, f"simulated {sim.log.n_events:,} ev, {WEEKS} wk, newest 20% cases", None
    try:
        from bench.predictors import ROUTERS
        from bench.predictors import _router_log as read_router_log
    except ImportError:  # run as a script
        from predictors import ROUTERS  # type: ignore[no-redef]
        from predictors import _router_log as read_router_log
    path, preset, group_column, feats, _ = ROUTERS[name]
    log = read_router_log(data_dir() / "process_logs" / path, preset, group_column)
    missing = [f for f in feats if f not in log.df.columns]
    if missing:
        raise SystemExit(f"train_scale: {name} log lacks router feature column(s) {missing}")
    return log, None, f"{name} newest 20% cases", list(feats)


def run_router_log(res: Results, name: str, tmp: Path) -> None:
    """The router on 100 % of the training cases and on stratified and uniform samples, interleaved."""
    from insight.models.split import sample_case_ids, split_newest
    from insight.training import router_table

    log, tickets, data, feats = _router_log(name)
    log_path = tmp / f"{name}-router-log.pkl"
    log_path.write_bytes(pickle.dumps((log, tickets)))
    # The training part train_router samples from, rebuilt here only to report the sampler's cost and drift.
    table, cats, text_col = router_table(log=log, tickets=tickets, features=feats)
    train, test = split_newest(table, 0.2, too_few="too few labelled cases")
    del log, tickets
    res.add("case sample", data, "router features", ", ".join(cats) + (" + ticket text" if text_col else ""))
    res.add("case sample", data, "router train cases / test cases (labelled)", f"{len(train)} / {len(test)}")
    starts = train["created_at"]
    week = (starts - starts.min()) // pd.Timedelta(WINDOW)
    full_share = week.value_counts(normalize=True)
    sides: dict[str, tuple[float | None, str | None]] = {"100%": (None, None)}
    for frac in FRACTIONS:
        for label, window in (("stratified", WINDOW), ("uniform", None)):
            key = f"{label} {frac:.0%}"
            sides[key] = (frac, window)
            gaps = []
            for r in range(REPEATS):
                t0 = time.perf_counter()
                keep = sample_case_ids(starts, fraction=frac, window=window, seed=SEED + r)
                sample_s = time.perf_counter() - t0
                share = week.loc[keep].value_counts(normalize=True).reindex(full_share.index, fill_value=0.0)
                gaps.append(float((share - full_share).abs().max()))
            res.add("case sample", data, f"router {key}: sampler seconds (last repeat)", sample_s)
            res.add("case sample", data, f"router {key}: worst week share gap, points (max over repeats)",
                    100 * max(gaps))
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    for r in range(REPEATS):  # interleaved: every side once per round
        for key, (frac, window) in sides.items():
            got[key].append(_router_in_child(log_path, feats, frac, window, SEED if frac is None else SEED + r))
            print(f"    {name} router {key} repeat {r + 1}/{REPEATS}: {got[key][-1]}", flush=True)
    task = "resolving team"
    full = got["100%"]
    full_acc = statistics.mean(x["accuracy"] for x in full)
    full_fit = min(x["fit_s"] for x in full)
    full_total = min(x["total_s"] for x in full)
    full_peak = max(x["peak_mib"] for x in full)
    f0 = full[0]
    res.add(task, data, f"100%: accuracy % as shipped, {f0['selected']} (baseline: rule {f0['rule']}, on 100%)",
            full_acc, f0["rule_accuracy"])
    res.add(task, data, "100%: accuracy % on reassigned (baseline: the same rule, on 100%)",
            statistics.mean(x["accuracy_reassigned"] for x in full), f0["rule_accuracy_reassigned"])
    res.add(task, data, "first team among the features (the rules servable)",
            str(f0["first_team_column"] is not None), f0["first_team_column"])
    for key in sides:
        runs = got[key]
        d = f"{data}, {key}"
        if key != "100%":
            vals = [x["accuracy"] for x in runs]
            res.add(task, d, f"accuracy % mean of {REPEATS} samples (baseline: 100%)", statistics.mean(vals), full_acc)
            res.add(task, d, "accuracy % min..max over samples", f"{min(vals):.2f}..{max(vals):.2f}")
            res.add(task, d, "accuracy % on reassigned, mean (baseline: 100%)",
                    statistics.mean(x["accuracy_reassigned"] for x in runs),
                    statistics.mean(x["accuracy_reassigned"] for x in full))
            res.add(task, d, "best trivial rule fitted on the same sample: accuracy % (mean)",
                    statistics.mean(x["rule_accuracy"] for x in runs))
            res.add(task, d, "selected strategy per repeat", ", ".join(x["selected"] for x in runs))
        res.add(task, d, f"fit seconds (TeamRouter.fit), best of {REPEATS} (baseline: 100%)",
                min(x["fit_s"] for x in runs), full_fit)
        res.add(task, d, "fit CPU seconds, best", min(x["cpu_s"] for x in runs))
        res.add(task, d, f"train_router seconds (table, fit, scoring), best of {REPEATS} (baseline: 100%)",
                min(x["total_s"] for x in runs), full_total)
        res.add(task, d, "peak RSS MiB of the child, max (baseline: 100%)", max(x["peak_mib"] for x in runs),
                full_peak)
        res.add(task, d, "RSS MiB after imports (same child)", min(x["rss_imports_mib"] for x in runs))
        res.add(task, d, "test cases scored (every side)", runs[-1]["n_test"])


def main() -> None:
    """Run every log and write bench/results/train_scale.json and bench/results/train_scale_router.json."""
    unknown = [t for t in TASKS if t not in (*PREFIX_TASKS, "router")]
    if unknown:
        raise SystemExit(f"train_scale: unknown task(s) {unknown} in DESKPILOT_BENCH_TASKS")
    env = {"seed": SEED, "repeats": REPEATS, "fractions": list(FRACTIONS), "window": WINDOW,
           "simulated_events_asked": EVENTS, "tasks": list(TASKS)}
    runs: list[tuple[Results, list[str], Any]] = []
    prefix_logs = [x for x in LOGS if x == "simulated" or x in PUBLIC]
    if any(t in TASKS for t in PREFIX_TASKS):
        runs.append((Results("train_scale", extra_env={**env, "logs": prefix_logs}), prefix_logs, run_log))
    if "router" in TASKS:
        try:
            from bench.predictors import ROUTERS
        except ImportError:  # run as a script
            from predictors import ROUTERS  # type: ignore[no-redef]
        router_logs = [x for x in (LOGS if LOGS_ASKED else ROUTER_DEFAULT_LOGS) if x == "simulated" or x in ROUTERS]
        runs.append((Results("train_scale_router", extra_env={**env, "logs": router_logs}), router_logs,
                     run_router_log))
    with tempfile.TemporaryDirectory(prefix="train_scale-") as tmp:
        for res, logs, run in runs:
            t0 = time.perf_counter()
            for i, name in enumerate(logs):
                run(res, name, Path(tmp))
                res.extra_env["total_seconds"] = round(time.perf_counter() - t0, 1)
                res.extra_env["logs_done"] = list(logs[:i + 1])
                res.write()  # after every log, so a run cut short keeps what it measured


if __name__ == "__main__":
    main()
