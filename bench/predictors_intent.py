"""Intent classifier: Banking77 (closed set, speed; a seeded quarter of intents held out as out-of-scope), HINT3 v2
(with its out-of-scope test queries) and the simulator's tickets; run alone or from predictors.py.

Every threshold is chosen on training data only: the model's own (inner folds with held-out intents, see
insight.models.intent), and for the baselines a validation split carved from the training file. Baselines are
measured in the same run on the same split: MiniLM embeddings + LogisticRegression with a max-probability threshold
at the same in-scope flag budget, and deskpilot's classifier with the max-probability score. Test sets are touched
once, at the end. Embeddings are cached per text in memory and in /tmp (never in the repository); the throughput
row uses a fresh, uncached embedder.

The embedder is the production default, the ONNX backend (core/embedding/): training and test embeddings come
from it, and the rows compare it with the torch backend in the same process (throughput on 1500 tickets, latency of
one ticket and of a batch of 64, and how many test predictions change when the torch embedder is attached instead).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from bench._common import Results, best_of, data_dir, timer
except ImportError:  # run as a script: bench/ is on sys.path, the repo is added by _common
    from _common import Results, best_of, data_dir, timer  # type: ignore[no-redef]

CACHE_DIR = Path(os.environ.get("DESKPILOT_BENCH_CACHE", "/tmp/deskpilot-bench-cache"))
GRID_C = (0.3, 1.0)
GRID_WEIGHT = (2.0, 3.0, 4.0)
HINT3_BOTS = ("sofmattress", "curekart", "powerplay11")
OOS = "NO_NODES_DETECTED"
README_TICKET = ("Charged twice for my order. Hi, my card was charged two times for order #55120 on Nimbus Pay. "
                 "Please refund the second payment. Reach me at jane.doe@example.com.")


class CachedEmbedder:
    """Wraps an Embedder: same name/fingerprint, but each distinct text is embedded once (memory + /tmp npz)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        # Keyed by backend too: accuracy is measured on the backend's own vectors, not on the other's cache.
        self._file = CACHE_DIR / f"emb-{self.fingerprint[:16]}-{getattr(inner, 'backend', 'torch')}.npz"
        self._mem: dict[str, np.ndarray] = {}
        if self._file.is_file():
            z = np.load(self._file, allow_pickle=False)
            self._mem = dict(zip(z["keys"].tolist(), z["vecs"], strict=True))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._mem}.items())
        if missing:
            vecs = self.inner.encode([t for _, t in missing])
            self._mem.update({k: v for (k, _), v in zip(missing, vecs, strict=True)})
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            np.savez(self._file, keys=np.array(list(self._mem)), vecs=np.stack(list(self._mem.values())))
        return np.stack([self._mem[k] for k in keys]).astype(np.float32)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true)) * 100)


def _calibration(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> tuple[float, float]:
    """Expected calibration error (%, top-label, equal-width bins) and mean log-loss."""
    conf, ok = proba.max(axis=1), proba.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - ok[m].mean())
    nll = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)).mean())
    return float(ece * 100), nll


def _select_hyperparams(texts: list[str], labels: np.ndarray, emb: np.ndarray, seed: int) -> tuple[float, float, dict]:
    """3-fold CV accuracy on train for each (C, embedding weight); features built once per fold."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    from insight.models.intent import IntentClassifier

    proto = IntentClassifier(seed=seed)
    scores: dict[tuple[float, float], list[float]] = {}
    arr = np.asarray(texts, dtype=object)
    for tr, va in StratifiedKFold(n_splits=3, shuffle=True, random_state=seed).split(arr, labels):
        word, char = proto._new_vectorizers()
        lex_tr = hstack([word.fit_transform(arr[tr].tolist()), char.fit_transform(arr[tr].tolist())], format="csr")
        lex_va = hstack([word.transform(arr[va].tolist()), char.transform(arr[va].tolist())], format="csr")
        for w in GRID_WEIGHT:
            Xtr = hstack([lex_tr, csr_matrix(emb[tr] * w)], format="csr")
            Xva = hstack([lex_va, csr_matrix(emb[va] * w)], format="csr")
            for C in GRID_C:
                svm = LinearSVC(C=C, max_iter=5000, random_state=seed).fit(Xtr, labels[tr])
                scores.setdefault((C, w), []).append(float((svm.predict(Xva) == labels[va]).mean()))
    table = {f"C={C},w={w}": round(float(np.mean(v)) * 100, 2) for (C, w), v in scores.items()}
    (C, w) = max(scores, key=lambda k: (np.mean(scores[k]), -k[0]))
    return C, w, table


def _latency_ms(fn, texts: list[str]) -> float:
    """Median wall time (ms) of fn(text) over `texts`, one call per text."""
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _logreg(emb_tr: np.ndarray, y_tr: np.ndarray, seed: int):
    """The baseline classifier: MiniLM embeddings + LogisticRegression (library defaults)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, random_state=seed).fit(emb_tr, y_tr)


def _budget_threshold(in_scope_scores: np.ndarray, budget: float) -> float:
    """The highest threshold that flags (score < threshold) at most `budget` of these in-scope scores."""
    s = np.sort(in_scope_scores)
    return float(s[min(len(s) - 1, int(np.floor(budget * len(s))))])


def _logreg_open_set(tr_x: list[str], tr_y: np.ndarray, te_x: list[str], cached, budget: float, seed: int,
                     oos_label: str) -> np.ndarray:
    """Baseline with rejection: LogReg on embeddings, max-probability threshold flagging `budget` of a validation
    split carved from the training rows (stratified 20 %), then refitted on all training rows."""
    from insight.training import intent_holdout

    emb_tr, emb_te = cached.encode(tr_x), cached.encode(te_x)
    va = intent_holdout(list(tr_y), fraction=0.2, seed=seed)
    fit_rows = np.setdiff1d(np.arange(len(tr_x)), va)
    lr = _logreg(emb_tr[fit_rows], tr_y[fit_rows], seed)
    thr = _budget_threshold(lr.predict_proba(emb_tr[va]).max(axis=1), budget)
    lr = _logreg(emb_tr, tr_y, seed)
    proba = lr.predict_proba(emb_te)
    pred = lr.classes_[proba.argmax(axis=1)].astype(object)
    pred[proba.max(axis=1) < thr] = oos_label
    return pred


def _open_set_rows(res: Results, task: str, data: str, y: np.ndarray, pred: np.ndarray, base: dict[str, np.ndarray],
                   oos_label: str, goals: dict[str, str] | None = None) -> None:
    """In-scope accuracy, OOS recall / precision, overall accuracy and macro-F1 (%), each next to the first baseline;
    the other baselines get rows of their own."""
    from insight.training import intent_metrics

    goals = goals or {}
    ours = intent_metrics(y, pred, oos_label=oos_label, threshold=0.0)
    theirs = {name: intent_metrics(y, p, oos_label=oos_label, threshold=0.0) for name, p in base.items()}
    first = next(iter(theirs.values()), {})
    pct = lambda v: None if v is None else v * 100  # noqa: E731
    for key, label in (("in_scope_accuracy", "in-scope accuracy %"), ("oos_recall", "OOS recall %"),
                       ("oos_precision", "OOS precision %"), ("accuracy", "overall accuracy %"),
                       ("macro_f1", "macro-F1 % (incl. OOS)")):
        first_name = next(iter(base), None)
        res.add(task, data, f"{label} (baseline: {first_name})" if first_name else label, pct(ours[key]),
                pct(first.get(key)), goals.get(key))
        for name, m in list(theirs.items())[1:]:
            res.add(task, data, f"{label} {name}", pct(m[key]))
    flagged = ours["n_test_in_scope_flagged"] / max(1, ours["n_test_in_scope"])
    res.add(task, data, "in-scope tickets flagged %", pct(flagged))


def run_banking77(res: Results, embedder, cached: CachedEmbedder, torch_embedder=None, seed: int = 7) -> None:
    """Banking77 closed set: test accuracy / macro-F1 against MiniLM + LogReg, train seconds, batched throughput.

    The default C and embedding weight came from this file's 3-fold CV on Banking77 *train*; set
    DESKPILOT_BENCH_INTENT_CV=1 to rerun that grid and use its choice."""
    from insight.models.intent import IntentClassifier

    d = data_dir() / "text" / "banking77"
    train, test = pd.read_csv(d / "train.csv"), pd.read_csv(d / "test.csv")
    tr_x, te_x = train["text"].astype(str).tolist(), test["text"].astype(str).tolist()
    tr_y, te_y = train["category"].to_numpy(), test["category"].to_numpy()
    with timer() as t_emb:
        emb_tr = cached.encode(tr_x)
    print(f"  (banking77 train embeddings ready in {t_emb():.1f}s)", flush=True)

    proto = IntentClassifier()
    C, w = proto.C, proto.embedding_weight
    if os.environ.get("DESKPILOT_BENCH_INTENT_CV") == "1":
        C, w, table = _select_hyperparams(tr_x, tr_y, emb_tr, seed)
        res.extra_env["intent_banking77_cv"] = {"grid": table, "chosen": {"C": C, "embedding_weight": w}}
        res.add("intent", "banking77 (train 3-fold CV)", f"cv accuracy C={C} w={w}", table[f"C={C},w={w}"])
    lr = _logreg(emb_tr, tr_y, seed)
    lr_acc = float((lr.predict(cached.encode(te_x)) == te_y).mean() * 100)

    model = IntentClassifier(embedder=cached, C=C, embedding_weight=w, seed=seed)
    with timer() as t_fit:
        model.fit(tr_x, tr_y)
    pred = model.predict(te_x)
    res.add("intent", "banking77 test", "accuracy % (baseline: MiniLM + LogReg)", float((pred == te_y).mean() * 100),
            lr_acc, ">= 94.0")
    res.add("intent", "banking77 test", "macro-F1 %", _macro_f1(te_y, pred))
    res.add("intent", "banking77", "train seconds (emb cached)", t_fit())
    p = model.predict_proba(te_x)
    res.add("intent", "banking77 test", "proba rows sum to 1 (max err)", float(np.abs(p.sum(axis=1) - 1).max()))
    ece, nll = _calibration(p, np.searchsorted(model.classes_, te_y))
    res.add("intent", "banking77 test", "ECE % (15 bins)", ece)
    res.add("intent", "banking77 test", "log-loss", nll)
    res.add("intent", "banking77 test", f"in-scope flagged % (oos score {model.oos_calibration_.score})",
            float(np.mean([q.out_of_scope for q in model.predict_with_oos(te_x)]) * 100), None,
            f"<= {model.max_in_scope_flagged * 100:.0f} (the budget, on validation)")

    # Throughput: the real embedder, nothing cached; whole pipeline (embed + TF-IDF + SVM + OOS flag).
    model.set_embedder(embedder)
    batch = te_x[:1500]
    secs, _ = best_of(lambda: model.predict_with_oos(batch), repeat=2)
    emb_secs, _ = best_of(lambda: embedder.encode(batch), repeat=2)
    res.add("intent", "banking77 test (1500, batched)", "tickets/s", len(batch) / secs, None, ">= 300")
    res.add("intent", "banking77 test (1500, batched)", "embedding share of time", emb_secs / secs)
    if torch_embedder is not None:
        _compare_backends(res, model, embedder, torch_embedder, te_x, te_y, pred)
    if os.environ.get("DESKPILOT_BENCH_INTENT_INT8", "1") == "1":
        _int8_rows(res, model, embedder, C, w, tr_x, tr_y, te_x, te_y, pred, seed, lr_acc)
    res.extra_env["intent_load_average_during_throughput"] = os.getloadavg()


def run_banking77_oos(res: Results, cached: CachedEmbedder, seed: int = 7) -> None:
    """Banking77 with a seeded quarter of the intents held out: trained on the other intents' training rows (the
    threshold from inner folds of those rows), tested on the whole test file, the held-out intents' rows being
    out of scope; and the same model on HINT3's test sentences (other domains, all out of scope)."""
    from insight.models.intent import IntentClassifier

    d = data_dir() / "text" / "banking77"
    train, test = pd.read_csv(d / "train.csv"), pd.read_csv(d / "test.csv")
    intents = np.array(sorted(train["category"].unique()))
    held = set(np.random.default_rng(seed).permutation(intents)[: len(intents) // 4].tolist())
    keep = ~train["category"].isin(held)
    tr_x, tr_y = train.loc[keep, "text"].astype(str).tolist(), train.loc[keep, "category"].to_numpy(dtype=object)
    te_x = test["text"].astype(str).tolist()
    y = np.where(test["category"].isin(held), "OOS", test["category"]).astype(object)
    data = f"banking77, {len(held)} of {len(intents)} intents held out"
    res.extra_env["intent_banking77_held_out_intents"] = sorted(held)
    model = IntentClassifier(embedder=cached, seed=seed)
    with timer() as t_fit:
        model.fit(tr_x, tr_y)
    pred = model.predict_labels_with_oos(te_x, oos_label="OOS")
    msp = IntentClassifier(embedder=cached, seed=seed, oos_method="proba").fit(tr_x, tr_y)
    base = {"MiniLM + LogReg, max-prob threshold": _logreg_open_set(tr_x, tr_y, te_x, cached,
                                                                    model.max_in_scope_flagged, seed, "OOS"),
            "deskpilot, max-prob score": msp.predict_labels_with_oos(te_x, oos_label="OOS")}
    _open_set_rows(res, "intent+oos", data, y, pred, base, "OOS")
    res.add("intent+oos", data, "in-scope acc % (no rejection)",
            float((model.predict([t for t, o in zip(te_x, y == "OOS", strict=True) if not o])
                   == y[y != "OOS"]).mean() * 100))
    res.add("intent+oos", data, "oos score chosen (inner folds)", model.oos_calibration_.score)
    res.add("intent+oos", data, "train seconds (emb cached)", t_fit())
    res.extra_env["intent_banking77_oos_calibration"] = _cal_dict(model)
    far = []
    for bot in HINT3_BOTS:
        far += pd.read_csv(data_dir() / "text" / "hint3" / "v2" / "test" / f"{bot}_test.csv",
                           usecols=["sentence", "label"]).dropna()["sentence"].astype(str).tolist()
    far_flag = float(np.mean(model.oos_score(far) < model.oos_threshold_) * 100)
    msp_flag = float(np.mean(msp.oos_score(far) < msp.oos_threshold_) * 100)
    res.add("intent+oos", data + " vs HINT3 sentences", "OOS recall % (baseline: deskpilot, max-prob score)",
            far_flag, msp_flag)


def _cal_dict(model) -> dict:
    from insight.training import jsonable_calibration

    return jsonable_calibration(model.oos_calibration_)


def _int8_rows(res: Results, model, embedder, C: float, w: float, tr_x: list[str], tr_y: np.ndarray,
               te_x: list[str], te_y: np.ndarray, float_pred: np.ndarray, seed: int, lr_acc: float) -> None:
    """The int8 embedder (DESKPILOT_EMBEDDING_QUANTIZE=int8): a model trained on its vectors with the float run's
    CV-chosen hyper-parameters; accuracy, changed predictions and throughput interleaved with the float model."""
    from core.embedding import Embedder
    from insight.models.intent import IntentClassifier

    int8 = Embedder(embedder.model_path, backend="onnx", quantize="int8", batch_size=embedder.batch_size,
                    cache_dir=embedder.cache_dir)
    model8 = IntentClassifier(embedder=CachedEmbedder(int8), C=C, embedding_weight=w, seed=seed).fit(tr_x, tr_y)
    pred8 = model8.predict(te_x)
    d = "banking77 test"
    res.add("intent", d, "accuracy % int8 embeddings", float((pred8 == te_y).mean() * 100), lr_acc, ">= 94.0")
    res.add("intent", d, "predictions changed by int8", int((pred8 != float_pred).sum()))
    model8.set_embedder(int8)
    batch = te_x[:1500]
    rates: dict[str, list[float]] = {"float": [], "int8": []}
    for _ in range(2):  # interleaved: both see the same machine load
        for name, m in (("float", model), ("int8", model8)):
            secs, _ = best_of(lambda m=m: m.predict_with_oos(batch), repeat=1)
            rates[name].append(len(batch) / secs)
    res.add("intent", "banking77 test (1500, batched)", "tickets/s int8 embedder", max(rates["int8"]),
            max(rates["float"]), ">= 300")
    res.add("intent", "banking77 test (1 ticket)", "median ms int8 (whole model)",
            _latency_ms(lambda t: model8.predict_with_oos([t]), te_x[1500:1600]))


def _compare_backends(res: Results, model, onnx_embedder, torch_embedder, te_x: list[str], te_y: np.ndarray,
                      onnx_pred: np.ndarray) -> None:
    """Same process, same model: the torch embedder's throughput, latency and predictions next to the ONNX one's."""
    from core.embedding import Embedder

    batch, one, b64 = te_x[:1500], te_x[1500:1600], te_x[:64]
    d = "banking77 test"
    emb = {"onnx": onnx_embedder, "torch": torch_embedder}
    diff = float(np.abs(onnx_embedder.encode(te_x) - torch_embedder.encode(te_x)).max())
    res.add("intent", d, "max |onnx - torch| embedding", f"{diff:.1e}", None, "<= 1e-5")  # too small to round
    model.set_embedder(torch_embedder)
    torch_pred = model.predict(te_x)
    res.add("intent", d, "accuracy % with torch embedder", float((torch_pred == te_y).mean() * 100))
    res.add("intent", d, "predictions changed by backend", int((torch_pred != onnx_pred).sum()))
    # Interleaved so both backends see the same machine load.
    for name in ("torch", "onnx"):
        model.set_embedder(emb[name])
        secs, _ = best_of(lambda: model.predict_with_oos(batch), repeat=2)
        res.add("intent", "banking77 test (1500, batched)", f"tickets/s {name} embedder", len(batch) / secs)
    one_thread = Embedder(onnx_embedder.model_path, backend="onnx", threads=1, batch_size=onnx_embedder.batch_size,
                          cache_dir=onnx_embedder.cache_dir)
    model.set_embedder(one_thread)
    secs, _ = best_of(lambda: model.predict_with_oos(batch), repeat=2)
    res.add("intent", "banking77 test (1500, batched)", "tickets/s onnx embedder 1 thread", len(batch) / secs)
    for name in ("torch", "onnx"):
        model.set_embedder(emb[name])
        model.predict_with_oos(one[:5])  # warm
        res.add("intent", "banking77 test (1 ticket)", f"median ms {name} (whole model)",
                _latency_ms(lambda t: model.predict_with_oos([t]), one))
        res.add("intent", "banking77 test (1 ticket)", f"median ms {name} (embedding only)",
                _latency_ms(lambda t, e=emb[name]: e.encode([t]), one))
        secs, _ = best_of(lambda: model.predict_with_oos(b64), repeat=3)
        res.add("intent", "banking77 test (64 tickets)", f"ms per batch {name} (whole model)", secs * 1000)
    model.set_embedder(onnx_embedder)


def run_hint3(res: Results, cached: CachedEmbedder, seed: int = 7) -> None:
    """HINT3 v2: trained on each bot's training file (threshold from its inner folds: no validation beyond the
    training file), tested once on the test file whose NO_NODES_DETECTED queries are out of scope."""
    from insight.models.intent import IntentClassifier

    d = data_dir() / "text" / "hint3" / "v2"
    for bot in HINT3_BOTS:
        # powerplay11_train.csv has a trailing empty column; keep only the two named ones.
        train = pd.read_csv(d / "train" / f"{bot}_train.csv", usecols=["sentence", "label"]).dropna()
        test = pd.read_csv(d / "test" / f"{bot}_test.csv", usecols=["sentence", "label"]).dropna()
        tr_x, te_x = train["sentence"].astype(str).tolist(), test["sentence"].astype(str).tolist()
        tr_y = train["label"].to_numpy(dtype=object)
        y = test["label"].to_numpy(dtype=object)
        cached.encode(tr_x + te_x)  # embed outside the timed fit
        model = IntentClassifier(embedder=cached, seed=seed)
        with timer() as t_fit:
            model.fit(tr_x, tr_y)
        pred = model.predict_labels_with_oos(te_x, oos_label=OOS)
        msp = IntentClassifier(embedder=cached, seed=seed, oos_method="proba").fit(tr_x, tr_y)
        base = {"MiniLM + LogReg, max-prob threshold": _logreg_open_set(tr_x, tr_y, te_x, cached,
                                                                        model.max_in_scope_flagged, seed, OOS),
                "deskpilot, max-prob score": msp.predict_labels_with_oos(te_x, oos_label=OOS)}
        name = f"hint3 v2 {bot}"
        _open_set_rows(res, "intent+oos", name, y, pred, base, OOS)
        oos = y == OOS
        res.add("intent+oos", name, "reject-everything acc %", float(oos.mean() * 100))
        closed = model.predict([t for t, o in zip(te_x, oos, strict=True) if not o])
        res.add("intent+oos", name, "in-scope acc % (no rejection)", float((closed == y[~oos]).mean() * 100))
        res.add("intent+oos", name, "oos score chosen (inner folds)", model.oos_calibration_.score)
        res.add("intent+oos", name, "train seconds (emb cached)", t_fit())
        res.extra_env[f"intent_{bot}_oos_calibration"] = _cal_dict(model)


def run_simulator(res: Results, embedder, seed: int = 7, cases: int = 3000) -> None:
    """Trained as `deskpilot train` trains it (simulated tickets, train_intent with its hold-out and refit); the
    share of a fresh simulated seed's in-domain tickets not flagged, and the README's example ticket."""
    from insight.simulate import simulate
    from insight.training import ticket_texts, train_intent

    sim = simulate(n_cases=cases, seed=seed)
    t, texts = ticket_texts(sim.tickets)
    cached = CachedEmbedder(embedder)
    with timer() as t_fit:
        m = train_intent(texts=texts, labels=t["intent"].astype(str).tolist(), embedder=cached, seed=seed)
    model = m.model
    model.set_embedder(cached)
    fresh_seed = seed + 1000
    ft, ftexts = ticket_texts(simulate(n_cases=1000, seed=fresh_seed).tickets)
    flags = np.array([p.out_of_scope for p in model.predict_with_oos(ftexts)])
    data = f"simulator ({cases} cases, seed {seed}); fresh seed {fresh_seed}"
    res.add("intent+oos", data, "in-domain tickets not flagged %", float((1 - flags.mean()) * 100), None, ">= 90")
    res.add("intent+oos", data, "held-out test in-scope accuracy %", m.metrics["in_scope_accuracy"] * 100)
    readme = model.predict_with_oos([README_TICKET])[0]
    res.add("intent+oos", "README example ticket (double charge)", "flagged out of scope", str(readme.out_of_scope),
            None, "False")
    res.add("intent+oos", "README example ticket (double charge)", "oos score (flagged below threshold)",
            readme.oos_score, model.oos_threshold_)
    res.add("intent+oos", "README example ticket (double charge)", f"intent {readme.label!r} confidence",
            readme.confidence)
    res.add("intent+oos", data, "train + refit seconds", t_fit())
    res.extra_env["intent_simulator_oos_calibration"] = _cal_dict(model)


def run(res: Results) -> None:
    """Add the intent rows (HINT3 v2, Banking77 closed set and with held-out intents, simulator) to `res`."""
    from api.settings import bundled_model_path
    from core.embedding import Embedder

    t0 = time.perf_counter()
    embedder = Embedder(bundled_model_path(), batch_size=64, backend="onnx")
    torch_embedder = (Embedder(bundled_model_path(), batch_size=64, backend="torch")
                      if os.environ.get("DESKPILOT_BENCH_INTENT_TORCH", "1") == "1" else None)
    res.extra_env["intent_embedder"] = {"backend": embedder.backend, "threads": embedder.threads,
                                        "batch_size": embedder.batch_size}
    cached = CachedEmbedder(embedder)
    run_hint3(res, cached)
    run_banking77_oos(res, cached)
    run_simulator(res, embedder)
    run_banking77(res, embedder, cached, torch_embedder)
    print(f"  (intent benchmark took {time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    results = Results("predictors_intent")
    run(results)
    results.write()
