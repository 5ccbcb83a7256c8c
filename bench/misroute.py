"""Misroute risk: the calibrated misroute model against the `1 - p(best team)` proxy it replaces.

Run: `nice -n 5 .venv/bin/python bench/misroute.py` (no args). Writes bench/results/misroute.json.
Set DESKPILOT_BENCH_ONLY=sim (or bpic2013, servicenow; comma-separated) for a partial run (its own file).

Protocol (insight.training.train_misroute): cases ordered by creation, oldest 80 % train, newest 20 % test. The
model's C and calibration map are chosen on the newest 20 % of the training cases (validation); the test cases are
scored once. The proxy is `1 - p(best team)` of a router fitted on the same training cases in the same run (the
bench/predictors.py router set-up on the real logs of its ROUTERS, with history scored as deployed; the default
router on the simulator, which is what `deskpilot train` ships). The constant training base rate is a second
baseline. On the simulator the answer's other risks (SLA breach, expected hours) are scored at creation too.

The auto-route gate (settings auto_route_confidence / max_auto_misroute_risk): on validation, the share of tickets
whose risk exceeds the misroute limit and the misrouted rate on each side; on the test cases, with the proxy
router's confidence, the share auto-routed and the misrouted rate among them with and without the misroute gate.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

try:
    from bench._common import Results, data_dir, timer
    from bench.predictors import ROUTER_PARAMS, ROUTERS, SEED, _router_log
except ImportError:  # run as a script: bench/ is on sys.path, the repo is added by _common
    from _common import Results, data_dir, timer  # type: ignore[no-redef]
    from predictors import ROUTER_PARAMS, ROUTERS, SEED, _router_log  # type: ignore[no-redef]

SIM_CASES = 6000
AUTO_CONFIDENCE = 0.85  # api.settings defaults, read here as numbers to keep the bench free of the service
MAX_RISK = 0.3


def _run(res: Results, name: str, *, log: Any, tickets: Any, features: list[str] | None,
         router_params: dict[str, Any] | None) -> None:
    from core.errors import InvalidInput
    from insight.models.misroute import MisrouteModel, probability_scores
    from insight.training import misroute_proxy, router_table

    data = f"{name} newest 20% cases"
    table, cats, text_col = router_table(log=log, tickets=tickets, features=features)
    table = table[table["misrouted"].notna()]
    n_test = int(round(len(table) * 0.2))
    train, test = table.iloc[:-n_test], table.iloc[-n_test:]
    cols = cats + ([text_col] if text_col else [])
    y_tr = train["misrouted"].astype(bool).to_numpy()
    y_te = test["misrouted"].astype(bool).to_numpy()
    try:
        with timer() as t:
            model = MisrouteModel(categorical=cats, text=text_col, seed=SEED).fit(train[cols], y_tr)
    except InvalidInput as exc:  # e.g. a log whose teams almost never pass a ticket on: nothing to learn
        res.add("misroute risk", data, "not trained", exc.message)
        return
    fit_s = t()
    p = model.predict_proba(test[cols])
    with timer() as t:
        proxy = misroute_proxy(train, test, cols, cats, text_col, seed=SEED, params=router_params)
    proxy_s = t()
    m = probability_scores(y_te, p)
    b = probability_scores(y_te, proxy)
    base = probability_scores(y_te, np.full(len(y_te), float(y_tr.mean())))
    task = "misroute risk"
    res.add(task, data, "test cases / misrouted share", f"{len(y_te)} / {y_te.mean():.4f}")
    res.add(task, data, "Brier (baseline 1-p(team))", m.brier, b.brier, "below the proxy")
    res.add(task, data, "AUC (baseline 1-p(team))", m.auc, b.auc, "above the proxy")
    res.add(task, data, "log loss (baseline 1-p(team))", m.log_loss, b.log_loss)
    res.add(task, data, "calibration error (baseline 1-p)", m.ece, b.ece)
    res.add(task, data, "Brier (baseline: train base rate)", m.brier, base.brier)
    res.add(task, data, "chosen C / calibration", f"{model.C_} / {model.calibration_}")
    res.add(task, data, "fit seconds (model / proxy router)", f"{fit_s:.1f} / {proxy_s:.1f}")

    # The gate on validation (the model's calibration slice: calibrator in-sample, C chosen there).
    n_cal = model.validation_["n"]
    val = train.iloc[len(train) - n_cal:]
    pv = model.predict_proba(val[cols])
    yv = val["misrouted"].astype(bool).to_numpy()
    above = pv > MAX_RISK
    gate = f"auto-route gate, risk > {MAX_RISK}"
    res.add(gate, f"{name} validation", "share of tickets above", float(above.mean()))
    res.add(gate, f"{name} validation", "misrouted rate above / below",
            f"{yv[above].mean() if above.any() else float('nan'):.4f} / "
            f"{yv[~above].mean() if (~above).any() else float('nan'):.4f}")
    # On test: tickets the proxy router is confident about (would be auto-routed) with and without the gate.
    conf = 1.0 - proxy
    auto = conf >= AUTO_CONFIDENCE
    gated = auto & (p <= MAX_RISK)
    res.add(gate, f"{name} test", "auto-routed share: confidence only / + gate",
            f"{auto.mean():.4f} / {gated.mean():.4f}")
    res.add(gate, f"{name} test", "misrouted among auto-routed: conf only / + gate",
            f"{y_te[auto].mean() if auto.any() else float('nan'):.4f} / "
            f"{y_te[gated].mean() if gated.any() else float('nan'):.4f}")
    res.add(gate, f"{name} test", "same with the proxy as risk (1-p <= limit)",
            f"{(auto & (proxy <= MAX_RISK)).mean():.4f}")


def _sla_at_creation(res: Results, sim: Any) -> None:
    """The answer's other risks on the simulator, at the ticket's creation event as triage computes them: the
    remaining-time model as `deskpilot train` ships it, fitted on the oldest 80 % of cases, scored on the rest."""
    from insight.models.misroute import probability_scores
    from insight.models.remaining_time import RemainingTimePredictor
    from insight.training import split_log

    train, test = split_log(sim.log, test_fraction=0.2)
    rt = RemainingTimePredictor(seed=SEED).fit(train)
    first = rt.prefixes(test)
    first = first.take(first.prefix_len == 1)
    tr_first = rt.prefixes(train)
    tr_first = tr_first.take(tr_first.prefix_len == 1)
    hours = first.elapsed_hours + first.remaining_hours
    y = hours > rt.sla_hours_
    y_tr = (tr_first.elapsed_hours + tr_first.remaining_hours) > rt.sla_hours_
    p = rt.predict_breach_proba(first)
    s = probability_scores(y, p)
    base = probability_scores(y, np.full(len(y), float(np.mean(y_tr))))
    data = f"simulator {SIM_CASES} newest 20% cases"
    task = "SLA breach risk at creation"
    res.add(task, data, "test tickets / SLA hours / breach share", f"{len(y)} / {rt.sla_hours_:.1f} / {y.mean():.4f}")
    res.add(task, data, "Brier (baseline: train base rate)", s.brier, base.brier, "< baseline")
    res.add(task, data, "AUC", s.auc, 0.5, "> baseline")
    res.add(task, data, "calibration error (baseline: base rate)", s.ece, base.ece)
    expected = rt.predict(first)
    median = float(np.median(tr_first.elapsed_hours + tr_first.remaining_hours))
    res.add("expected hours at creation", data, "MAE hours (baseline: train median)",
            float(np.mean(np.abs(expected - hours))), float(np.mean(np.abs(median - hours))), "< baseline")


def main() -> None:
    """Run the misroute benchmark and write bench/results/misroute.json."""
    from insight.simulate import simulate

    only = [x for x in os.environ.get("DESKPILOT_BENCH_ONLY", "").split(",") if x]
    res = Results("misroute" if not only else "misroute_" + "_".join(only),
                  extra_env={"seed": SEED, "only": ",".join(only) or "all", "sim_cases": SIM_CASES})
    t0 = time.perf_counter()
    if not only or "sim" in only:
        sim = simulate(n_cases=SIM_CASES, seed=SEED)
        _run(res, f"simulator {SIM_CASES}", log=sim.log, tickets=sim.tickets, features=None, router_params=None)
        _sla_at_creation(res, sim)
    root = data_dir() / "process_logs"
    # The router as bench/predictors.py fits it; only its chosen strategy is needed here.
    params = {k: v for k, v in ROUTER_PARAMS.items() if k != "keep_candidates"}
    for name, (path, preset, group_column, feats, _goals) in ROUTERS.items():
        if only and name not in only:
            continue
        log = _router_log(root / path, preset, group_column)
        missing = [f for f in feats if f not in log.df.columns]
        if missing:
            raise SystemExit(f"misroute bench: {name} log lacks feature column(s) {missing}")
        _run(res, name, log=log, tickets=None, features=feats, router_params=params)
    res.extra_env["total_seconds"] = round(time.perf_counter() - t0, 1)
    res.write()


if __name__ == "__main__":
    main()
