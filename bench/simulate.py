"""Simulator benchmark: time to generate ~1M events (vs a per-event Python loop), text difficulty, planted shares.

Every timing is the best of REPEAT runs, interleaved (the generator with and without text and the per-event loop
alike); the loop builds 20,000 cases, and the two are compared per event. The majority-intent baseline is measured
on the same split as the classifier.

Run: nice -n 5 .venv/bin/python bench/simulate.py   (writes bench/results/simulate.json)
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
from _common import Results, best_of_interleaved

from insight.simulate import SimConfig, simulate
from insight.simulate.engine import SLOTS

REPEAT = 3  # runs of every timed generator (the same for both sides of every ratio)


def _loop_events(sim_cases: int, seed: int) -> tuple[float, int]:
    """The alternative: build an event table of the same shape one event at a time in Python (dict rows)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    rows = []
    start = pd.Timestamp("2026-01-05", tz="UTC")
    for c in range(sim_cases):
        t = start + pd.Timedelta(minutes=float(rng.random() * 120_000))
        for act, block in SLOTS:
            if block is not None and rng.random() < 0.7:
                continue
            t = t + pd.Timedelta(minutes=float(rng.lognormal(4.0, 1.0)))
            rows.append({"case_id": f"C{c:07d}", "activity": act, "timestamp": t, "resource": "agent_001",
                         "group": "Service Desk L1", "channel": "chat", "lifecycle": "complete"})
    df = pd.DataFrame(rows)
    return time.perf_counter() - t0, len(df)


def main() -> None:
    """Run the benchmark and write bench/results/simulate.json."""
    res = Results("simulate")

    # 1. A million events, vectorised, with and without text; the per-event loop on a slice, compared per event.
    no_text = SimConfig(ticket_text=False)
    pilot = simulate(n_cases=2000, seed=1)  # sized as simulate_events does, outside the timing
    n_cases = math.ceil(1_000_000 / (pilot.log.n_events / 2000))
    timed = best_of_interleaved({
        "with text": lambda: simulate(n_cases=n_cases, seed=1),
        "events only": lambda: simulate(n_cases=n_cases, seed=1, config=no_text),
        "loop": lambda: _loop_events(20_000, seed=1),
    }, repeat=REPEAT)
    t_1m, big = timed["with text"]
    t_events, ev_only = timed["events only"]
    t_loop, (_, n_loop) = timed["loop"]
    ev = big.log.n_events
    sec = f"seconds, best of {REPEAT}"
    res.add("generate ~1M events (+text)", f"{big.log.n_cases} cases", sec, t_1m, goal="< 60 s")
    res.add("generate ~1M events (+text)", f"{ev} events", f"events/s, best of {REPEAT}", ev / t_1m)
    loop_rate = n_loop / t_loop
    res.add("events only (no text)", f"{ev_only.log.n_events} events", sec, t_events)
    res.add("events/s vectorised (no text) vs loop", f"loop on {n_loop} events", f"events/s, best of {REPEAT} each",
            ev_only.log.n_events / t_events, baseline=loop_rate)
    res.add("events/s vectorised vs loop", f"loop on {n_loop} events", f"speed-up x (best of {REPEAT} each)",
            (ev_only.log.n_events / t_events) / loop_rate, goal="> 10x")
    res.add("ticket text (diff of the runs)", f"{big.log.n_cases} tickets", "us per ticket",
            1e6 * max(t_1m - t_events, 0.0) / big.log.n_cases)

    # 2. Text difficulty: TF-IDF + logistic regression on intent, chronological 2/3 - 1/3 split.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    sim = simulate(n_cases=6000, seed=7)
    t = sim.tickets
    text = (t["subject"] + " " + t["body"]).tolist()
    y = t["intent"].to_numpy()
    k = 4000
    x = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(text)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(x[:k], y[:k])
    acc = float((clf.predict(x[k:]) == y[k:]).mean())
    majority = float((y[k:] == pd.Series(y[:k]).mode()[0]).mean())
    res.add("intent TF-IDF+LR accuracy", "6000 tickets, 2000 test", "accuracy", acc, baseline=majority,
            goal="0.85-0.95")

    # 3. Planted shares as generated (seed 7, 6000 cases).
    tr = sim.truth
    res.add("planted misrouting", "6000 cases", "share", tr.misrouting.share, goal="0.15-0.20")
    res.add("planted ping-pong", "6000 cases", "share", tr.ping_pong.share)
    res.add("planted push-to-front", "6000 cases", "share of L1 cases", tr.push_to_front.share_of_l1_cases)
    res.add("planted rework", "6000 cases", "share", tr.rework.share)
    res.add("planted deviations", "6000 cases", "share", tr.deviations.share)
    res.add("slow step Approval granted", "6000 cases", "median wait h", tr.slow_step.median_wait_hours)
    res.add("knowledge gap data export", "6000 cases", "throughput ratio", tr.knowledge_gap.measured_throughput_ratio)
    res.add("drift Bot handoff last week", "6000 cases", "share of week", tr.drift.share_of_week)
    res.write()


if __name__ == "__main__":
    main()
