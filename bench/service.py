"""Service benchmark: drive the running API over loopback with concurrent clients (bounded in count and time).

Measures routing p50 / p99 latency at a fixed request rate (open loop, 50 req/s by default), saturation throughput,
batch routing throughput, and the same tickets through the bare model in-process, so the API overhead is a ratio
measured in the same run. The server runs in its own process (uvicorn, one worker) on 127.0.0.1.

Models: the production triage (`routing.triage` + models trained by `deskpilot train` into the bench home) when it
is installed; otherwise (or with `--model tfidf`) a TF-IDF + logistic-regression stand-in trained on simulated
tickets, labelled as such in every row.

With the production triage, a second configuration follows (skip it with --no-int8): the same pipeline trained and
served with int8 embeddings (DESKPILOT_EMBEDDING_QUANTIZE=int8), in its own home, on the same simulated tickets.

Every API-vs-bare comparison times the same tickets, as many of them, on both sides: the sequential phase and the
bare loop (p50 of --seq-requests tickets each), the fixed-rate phase and a bare loop over its tickets, the served
batches and bare batches of the same tickets.

    nice -n 5 .venv/bin/python bench/service.py            # defaults: 50 req/s for 20 s, 8 saturating clients
    .venv/bin/python bench/service.py --rate 50 --seconds 30 --model tfidf
    nice -n 5 .venv/bin/python bench/service.py --only-batch   # batch rows only: bench/results/service_batch.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Results  # noqa: E402

HOME = Path(os.environ.get("DESKPILOT_BENCH_HOME", "/tmp/deskpilot-bench-service"))
# The same pipeline trained and served with DESKPILOT_EMBEDDING_QUANTIZE=int8 (its models need their own home).
HOME_INT8 = HOME.with_name(HOME.name + "-int8")


# ---------------------------------------------------------------- the TF-IDF stand-in triage


@dataclass
class TfidfBundle:
    """Intent and team classifiers on TF-IDF features (a stand-in when routing.triage is absent)."""

    intent: Any
    team: Any
    versions: dict[str, str]


def train_tfidf_bundle(n_cases: int = 3000, seed: int = 7) -> TfidfBundle:
    """Train the stand-in on simulated tickets (text -> intent, text -> resolving team)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from insight.simulate import simulate

    t = simulate(n_cases=n_cases, seed=seed).tickets
    texts = (t["subject"].astype(str) + "\n\n" + t["body"].astype(str)).tolist()

    def pipe() -> Any:
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                             LogisticRegression(C=5.0, max_iter=1000, random_state=seed))

    intent = pipe().fit(texts, t["intent"].astype(str).tolist())
    team = pipe().fit(texts, t["resolving_team"].astype(str).tolist())
    return TfidfBundle(intent=intent, team=team, versions={"intent": "tfidf-standin", "router": "tfidf-standin"})


def tfidf_decide_batch(*, bundle: TfidfBundle, tickets: list[Any], thresholds: Any) -> list[Any]:
    """Triage many tickets with the stand-in (same thresholds logic as a real triage)."""
    from insight.models.intent import IntentPrediction
    from routing.models import Risks, TeamScore, TriageResult
    from routing.triage import decision_for

    texts = [t.text for t in tickets]
    pi = bundle.intent.predict_proba(texts)
    pt = bundle.team.predict_proba(texts)
    ic, tc = bundle.intent.classes_, bundle.team.classes_
    out = []
    for i in range(len(tickets)):
        ii, order = int(np.argmax(pi[i])), np.argsort(-pt[i])[:3]
        iconf, tconf = float(pi[i, ii]), float(pt[i, order[0]])
        oos = iconf < 0.3
        teams = [TeamScore(team=str(tc[j]), probability=float(pt[i, j])) for j in order]
        risks = Risks(misroute=1.0 - tconf)
        decision, reasons = decision_for(  # the production rule
            intent_pred=IntentPrediction(label=str(ic[ii]), confidence=iconf, out_of_scope=oos), teams=teams,
            risks=risks, thresholds=thresholds)
        out.append(TriageResult(
            intent=None if oos else str(ic[ii]), intent_confidence=iconf, out_of_scope=oos,
            team=str(tc[order[0]]), team_confidence=tconf, top_teams=teams, risks=risks, decision=decision,
            reasons=[*reasons, f"tf-idf stand-in: team {tconf:.2f}"],
            model_versions=dict(bundle.versions),
        ))
    return out


def tfidf_decide(*, bundle: TfidfBundle, ticket: Any, thresholds: Any) -> Any:
    """Triage one ticket with the stand-in."""
    return tfidf_decide_batch(bundle=bundle, tickets=[ticket], thresholds=thresholds)[0]


# ---------------------------------------------------------------- engines (what the server and the bare loop use)


def triage_available() -> bool:
    """True when the production triage module is installed."""
    try:
        import routing.triage  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_trained(home: Path, quantize: str = "none") -> None:
    """Simulate, mine, train and load the KB into `home` (the `deskpilot demo` pipeline) when nothing is trained, or
    when what is stored was trained by other code (the registry refuses such artifacts)."""
    import shutil

    from core.errors import ModelArtifactError
    from insight.models.registry import ModelRegistry

    reg = ModelRegistry(home / "registry")
    if reg.tasks():
        try:
            for task in reg.tasks():
                if reg.live_version(task) is not None:
                    reg.check_versions(reg.read_metadata(task, reg.live_version(task) or ""), task)
            return
        except ModelArtifactError as exc:
            print(f"{home} holds models from other code ({exc}); training again", flush=True)
            shutil.rmtree(home)
            home.mkdir(parents=True)
    print(f"preparing {home}: simulate, mine, train, load the KB (the demo pipeline) ...", flush=True)
    from api.commands.demo import run_pipeline
    from api.settings import Settings

    run_pipeline(settings=Settings(home=home, embedding_quantize=quantize), cases=3000, seed=7)


def load_engine(model: str, home: Path, quantize: str = "none") -> tuple[Any, Any, Any]:
    """(bundle, decide, decide_batch) loaded in this process for the bare-model measurement.

    The process gets the server's settings (BLAS threads, and the start-up heap frozen out of the garbage
    collector's scans), so bare and served compare: without the freeze, a bench process that has just trained the
    models carries their whole training heap through every collection, which the server never does."""
    from api.app import settle_heap

    if model == "tfidf":
        stand_in = train_tfidf_bundle()
        settle_heap()
        return stand_in, tfidf_decide, tfidf_decide_batch
    import routing.triage as triage
    from api.app import limit_blas_threads
    from api.settings import Settings
    from core.embedding import Embedder

    settings = Settings(home=home, embedding_quantize=quantize)
    limit_blas_threads(settings.blas_threads)  # the server process's setting, so bare and served compare
    bundle = triage.load_bundle(settings.registry_path, Embedder(settings.embedding_model_path, **settings.embedder_kwargs))
    settle_heap()
    return bundle, triage.decide, getattr(triage, "decide_batch", None)


def serve(model: str, home: Path, port: int) -> None:
    """Run the API (server process entry point)."""
    import uvicorn

    from api.app import create_app
    from api.logging import configure_logging
    from api.settings import Settings

    configure_logging("WARNING")
    settings = Settings(home=home)
    if model == "tfidf":
        bundle = train_tfidf_bundle()
        app = create_app(settings, bundle_loader=lambda s, e: bundle, decide=tfidf_decide,
                         decide_batch=tfidf_decide_batch)
    else:
        app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_config=None)


# ---------------------------------------------------------------- load generation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tickets(n: int) -> list[dict[str, Any]]:
    from insight.simulate import simulate

    t = simulate(n_cases=n, seed=11).tickets  # another seed than the stand-in's training set
    run = uuid.uuid4().hex[:6]
    return [
        {"ticket_id": f"bench-{run}-{i}", "subject": str(r.subject), "body": str(r.body), "channel": str(r.channel),
         "segment": str(r.segment), "priority": str(r.priority), "custom_fields": {"product": str(r.product)}}
        for i, r in enumerate(t.itertuples())
    ]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


async def _open_loop(url: str, key: str, tickets: list[dict[str, Any]], rate: float, seconds: float,
                     max_in_flight: int) -> tuple[list[float], list[float], int, float]:
    """Send at a fixed rate whatever the answers do; latencies from actual send and from the intended send time."""
    import httpx

    n = min(len(tickets), int(rate * seconds))
    lat: list[float] = []
    lat_sched: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(max_in_flight)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=30) as client:
        t0 = time.perf_counter()

        async def one(i: int, due: float) -> None:
            nonlocal errors
            async with sem:
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/tickets/route", json=tickets[i])
                except httpx.HTTPError as exc:  # a dropped connection is an error of the run, not a crash
                    errors += 1
                    if errors <= 3:
                        print(f"  request error: {type(exc).__name__}: {exc}", flush=True)
                    return
                end = time.perf_counter()
            if r.status_code in (200, 201):
                lat.append(end - start)
                lat_sched.append(end - due)
            else:
                errors += 1

        tasks = []
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return lat, lat_sched, errors, wall


def _sequential(url: str, key: str, tickets: list[dict[str, Any]]) -> tuple[list[float], int]:
    """One client sending back-to-back on one keep-alive connection, with the standard library's http.client:
    an asyncio httpx client adds client time of its own to every request, which is not the API's overhead."""
    import http.client
    import json
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    lat: list[float] = []
    errors = 0
    try:
        for t in tickets:
            body = json.dumps(t).encode()
            s = time.perf_counter()
            try:
                conn.request("POST", "/v1/tickets/route", body, headers)
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                continue
            if r.status in (200, 201):
                lat.append(time.perf_counter() - s)
            else:
                errors += 1
    finally:
        conn.close()
    return lat, errors


async def _closed_loop(url: str, key: str, tickets: list[dict[str, Any]], clients: int,
                       seconds: float) -> tuple[list[float], int, float]:
    """`clients` workers each sending back-to-back for `seconds`: the saturation throughput."""
    import httpx

    lat: list[float] = []
    errors = 0
    it = iter(tickets)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = next(it, None)
                if t is None:
                    return
                s = time.perf_counter()
                try:
                    r = await client.post("/v1/tickets/route", json=t)
                except httpx.HTTPError:
                    errors += 1
                    continue
                if r.status_code in (200, 201):
                    lat.append(time.perf_counter() - s)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return lat, errors, wall


async def _assist_loop(url: str, key: str, ticket_ids: list[str], rate: float) -> tuple[list[float], int, float]:
    """GET /v1/tickets/{id}/assist for routed tickets: back-to-back (rate 0) or at a fixed rate."""
    import httpx

    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        t0 = time.perf_counter()

        async def one(tid: str) -> None:
            nonlocal errors
            s = time.perf_counter()
            try:
                r = await client.get(f"/v1/tickets/{tid}/assist")
            except httpx.HTTPError:
                errors += 1
                return
            if r.status_code == 200:
                lat.append(time.perf_counter() - s)
            else:
                errors += 1
                if errors <= 3:
                    print(f"  assist error {r.status_code}: {r.text[:200]}", flush=True)

        if rate <= 0:
            for tid in ticket_ids:
                await one(tid)
        else:
            tasks = []
            for i, tid in enumerate(ticket_ids):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(tid)))
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return lat, errors, wall


def _batches(url: str, key: str, tickets: list[dict[str, Any]], size: int) -> tuple[int, float, int]:
    import httpx

    done = errors = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        t0 = time.perf_counter()
        for i in range(0, len(tickets), size):
            chunk = tickets[i:i + size]
            r = client.post("/v1/tickets/route/batch", json={"tickets": chunk})
            if r.status_code == 200:
                done += len(chunk)
            else:
                errors += 1
                print(f"  batch error {r.status_code}: {r.text[:200]}", flush=True)
        wall = time.perf_counter() - t0
    return done, wall, errors


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout} s: {url}/readyz")


def int8_rows(res: Results, args: argparse.Namespace, tickets: list[dict[str, Any]], float_batch_rate: float) -> None:
    """The production triage trained and served with int8 embeddings (DESKPILOT_EMBEDDING_QUANTIZE=int8): bare and
    served batch throughput, sequential latency and the fixed-rate phase, on tickets none of the other phases used."""
    from routing.models import DecisionThresholds, TicketIn

    HOME_INT8.mkdir(parents=True, exist_ok=True)
    ensure_trained(HOME_INT8, quantize="int8")
    n_open = int(args.rate * args.seconds)
    warm, seq_t = tickets[:150], tickets[150:450]
    open_t, batch_t = tickets[450:450 + n_open], tickets[450 + n_open:]
    data = "sim tickets, production triage, int8 embeddings"
    print("int8 embeddings: loading the bare model ...", flush=True)
    bundle, decide, decide_batch = load_engine("real", HOME_INT8, quantize="int8")
    th = DecisionThresholds()
    tseq = [TicketIn(**t) for t in seq_t]
    for t in [TicketIn(**t) for t in warm[:20]]:  # warm-up on tickets the timed loop does not repeat
        decide(bundle=bundle, ticket=t, thresholds=th)
    bare: list[float] = []
    for t in tseq:
        s = time.perf_counter()
        decide(bundle=bundle, ticket=t, thresholds=th)
        bare.append(time.perf_counter() - s)
    bare_open: list[float] = []  # the fixed-rate phase's own tickets, all of them
    for t in [TicketIn(**t) for t in open_t]:
        s = time.perf_counter()
        decide(bundle=bundle, ticket=t, thresholds=th)
        bare_open.append(time.perf_counter() - s)
    tbatch = [TicketIn(**t) for t in batch_t]  # as many tickets as the served batches send
    s = time.perf_counter()
    for i in range(0, len(tbatch), args.batch_size):
        decide_batch(bundle=bundle, tickets=tbatch[i:i + args.batch_size], thresholds=th)
    bare_batch_rate = len(tbatch) / (time.perf_counter() - s)
    del bundle
    key = _make_key(HOME_INT8, "helpdesk")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DESKPILOT_HOME": str(HOME_INT8), "DESKPILOT_EMBEDDING_QUANTIZE": "int8"}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--model", "real", "--port", str(port)], env=env)
    try:
        _wait_ready(url, proc)
        asyncio.run(_closed_loop(url, key, warm, 4, 5.0))  # warm-up: connections, caches, lazy loads
        print("int8 embeddings: sequential, fixed rate, batches ...", flush=True)
        slat, _ = _sequential(url, key, seq_t)
        lat, _, err, wall = asyncio.run(_open_loop(url, key, open_t, args.rate, args.seconds, args.max_in_flight))
        done, bwall, berr = _batches(url, key, batch_t, args.batch_size)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    res.add("route, 1 client sequential", data, "p50 ms", _pct(slat, 50))
    res.add("route @ fixed rate", data, "achieved req/s", len(lat) / wall)
    res.add("route @ fixed rate", data, "p99 ms", _pct(lat, 99), goal="< 50 ms @ 50 req/s")
    res.add("route @ fixed rate", data, "errors", err)
    res.add(f"route batch of {args.batch_size}", data, "tickets/s", done / bwall, baseline=bare_batch_rate,
            goal=">= 300 tickets/s")
    res.add(f"route batch of {args.batch_size}", data, "errors", berr)
    res.add("bare model, same tickets", data, "p50 ms", _pct(bare, 50))
    res.add("bare model, batched", data, "tickets/s", bare_batch_rate)
    res.add("bare model, batched, float embeddings (above)", data, "tickets/s", float_batch_rate)
    res.add("API overhead, sequential", data, "(API p50 - model p50)/model p50",
            (_pct(slat, 50) - _pct(bare, 50)) / _pct(bare, 50), goal="< 0.30")
    res.add("route @ fixed rate", data, "p50 ms", _pct(lat, 50))
    res.add("bare model, fixed-rate tickets", data, "p50 ms", _pct(bare_open, 50))
    res.add("API overhead, at fixed rate", data, "(API p50 - model p50)/model p50",
            (_pct(lat, 50) - _pct(bare_open, 50)) / _pct(bare_open, 50), goal="< 0.30")


async def _trivial_loop(url: str, keys: dict[str, str], ticket_id: str, seconds: float,
                       rate: float = 4.0) -> dict[str, list[float]]:
    """Trivial requests at `rate` req/s each, open loop: GET /healthz, GET /v1/tickets/{id}, a route call of a new
    ticket. Latencies by kind (a failed request counts as the timeout, so a miss cannot hide)."""
    import httpx

    out: dict[str, list[float]] = {"GET /healthz": [], "GET /v1/tickets/{id}": [], "POST /v1/tickets/route": []}
    new = iter(_tickets(int(rate * seconds) + 5))
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        t0 = time.perf_counter()

        async def one(kind: str) -> None:
            s = time.perf_counter()
            try:
                if kind == "GET /healthz":
                    r = await client.get("/healthz")
                elif kind == "GET /v1/tickets/{id}":
                    r = await client.get(f"/v1/tickets/{ticket_id}", headers={"Authorization": f"Bearer {keys['agent']}"})
                else:
                    r = await client.post("/v1/tickets/route", json=next(new),
                                          headers={"Authorization": f"Bearer {keys['helpdesk']}"})
                ok = r.status_code in (200, 201)
            except httpx.HTTPError:
                ok = False
            out[kind].append(time.perf_counter() - s if ok else 30.0)

        tasks = []
        i = 0
        while time.perf_counter() - t0 < seconds:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.extend(asyncio.create_task(one(k)) for k in out)
            i += 1
        await asyncio.gather(*tasks)
    return out


async def _heavy_loop(url: str, keys: dict[str, str], routed: list[str], stop: asyncio.Event,
                      clients: int = 3) -> dict[str, int]:
    """Heavy requests back-to-back from `clients` clients until `stop`: a published article of the largest size the
    hub accepts, an import of 500 articles, the knowledge-gap report and assist. Counts answers by kind and status."""
    import httpx

    from insight.simulate import simulate

    t = simulate(n_cases=600, seed=5).tickets
    texts = [f"{r.subject}. {r.body}" for r in t.itertuples()]
    big = " ".join(texts)[:50_000]
    run = uuid.uuid4().hex[:6]
    counts: dict[str, int] = {}
    km = {"Authorization": f"Bearer {keys['knowledge_manager']}"}
    kinds = ["big article", "import 500", "gaps", "assist"]

    async def worker(w: int) -> None:
        n = w
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            while not stop.is_set():
                kind = kinds[n % len(kinds)]
                n += 1
                try:
                    if kind == "big article":
                        r = await client.post("/v1/kb/articles", headers=km, json={
                            "title": f"Long article {run}-{n}", "body": big, "status": "published"})
                    elif kind == "import 500":
                        r = await client.post("/v1/kb/import", headers=km, json={"articles": [
                            {"title": f"Imported {run}-{n}-{i}", "body": texts[i % len(texts)] * 3,
                             "status": "published"} for i in range(500)]})
                    elif kind == "gaps":
                        r = await client.get("/v1/insights/gaps",
                                             headers={"Authorization": f"Bearer {keys['analyst']}"})
                    else:
                        r = await client.get(f"/v1/tickets/{routed[n % len(routed)]}/assist",
                                             headers={"Authorization": f"Bearer {keys['agent']}"})
                    key = f"{kind} {r.status_code}"
                except httpx.HTTPError as exc:
                    key = f"{kind} {type(exc).__name__}"
                counts[key] = counts.get(key, 0) + 1

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return counts


def heavy_rows(res: Results, url: str, keys: dict[str, str], routed: list[str], data: str, seconds: float) -> None:
    """p99 of trivial requests alone, then with heavy requests running beside them (the same trivial load)."""
    print(f"trivial requests alone for {seconds:g} s, then beside heavy ones ...", flush=True)
    alone = asyncio.run(_trivial_loop(url, keys, routed[0], seconds))

    async def beside() -> tuple[dict[str, list[float]], dict[str, int]]:
        stop = asyncio.Event()
        heavy = asyncio.create_task(_heavy_loop(url, keys, routed, stop))
        await asyncio.sleep(3.0)  # the heavy requests are under way
        trivial = await _trivial_loop(url, keys, routed[0], seconds)
        stop.set()
        return trivial, await heavy

    with_heavy, counts = asyncio.run(beside())
    for kind in alone:
        res.add(f"{kind} beside heavy requests", data, "p99 ms", _pct(with_heavy[kind], 99),
                baseline=_pct(alone[kind], 99), goal="< 200 ms")
        res.add(f"{kind} beside heavy requests", data, "max ms", 1000 * max(with_heavy[kind], default=float("nan")),
                goal="< 1000 ms")
        res.add(f"{kind} alone", data, "p99 ms", _pct(alone[kind], 99))
    for key, n in sorted(counts.items()):
        res.add("heavy requests beside", data, f"answers: {key}", n)


def _make_key(home: Path, role: str) -> str:
    """A fresh API key of `role` in the SQLite database of `home`."""
    from sqlmodel import Session, SQLModel

    from api.app import _import_tables, make_engine
    from api.auth import create_key

    engine = make_engine(f"sqlite:///{home / 'deskpilot.db'}")
    _import_tables()
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        secret = create_key(session=session, name=f"bench-{role}-{uuid.uuid4().hex[:6]}", role=role).secret
    engine.dispose()
    return secret


def only_heavy(model: str, args: argparse.Namespace) -> None:
    """Only the trivial-beside-heavy phases, on a server of their own; rows go to bench/results/service_heavy.json."""
    HOME.mkdir(parents=True, exist_ok=True)
    if model == "real":
        # In a child process: the pipeline holds the knowledge-base index (one writer) for as long as its process
        # lives, and the server must open it, or the article writes beside the trivial requests answer 503 at once.
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                        "from bench.service import ensure_trained; ensure_trained(Path(sys.argv[2]))",
                        str(Path(__file__).resolve().parents[1]), str(HOME)], check=True)
    label = "production triage" if model == "real" else "tf-idf stand-in"
    res = Results("service_heavy", extra_env={"model": label, "seconds": args.heavy_seconds,
                                              "server": "uvicorn, 1 worker, SQLite WAL", "load": os.getloadavg()})
    keys = {role: _make_key(HOME, role) for role in ("helpdesk", "agent", "knowledge_manager", "analyst")}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--model", model, "--port", str(port)],
                            env={**os.environ, "DESKPILOT_HOME": str(HOME)})
    try:
        _wait_ready(url, proc)
        routed = _tickets(40)
        asyncio.run(_closed_loop(url, keys["helpdesk"], routed, 4, 30.0))  # warm-up, and tickets to read back
        import httpx

        # Only tickets the warm-up stored (a shed one would make assist and the reads answer 404, no work).
        agent = {"Authorization": f"Bearer {keys['agent']}"}
        stored = [t["ticket_id"] for t in routed
                  if httpx.get(f"{url}/v1/tickets/{t['ticket_id']}", headers=agent, timeout=30).status_code == 200]
        heavy_rows(res, url, keys, stored, f"sim tickets, {label}", args.heavy_seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    res.write()


def _composition(bundle: Any, decide_batch: Any, tickets: list[Any], size: int) -> tuple[int, float]:
    """(decisions that differ, largest confidence difference) between each ticket triaged alone and in batches of
    `size`, with the embedding cache emptied before every call (so every vector is computed in that batch)."""
    from routing.models import DecisionThresholds

    th = DecisionThresholds()

    def run(batch: list[Any]) -> list[Any]:
        bundle.embedder.clear()
        return list(decide_batch(bundle=bundle, tickets=batch, thresholds=th))

    alone = [run([t])[0] for t in tickets]
    batched = [r for i in range(0, len(tickets), size) for r in run(tickets[i:i + size])]
    changed = sum((a.decision, a.intent, a.team) != (b.decision, b.intent, b.team) for a, b in zip(alone, batched, strict=True))
    diff = max(max(abs(a.intent_confidence - b.intent_confidence), abs(a.team_confidence - b.team_confidence))
               for a, b in zip(alone, batched, strict=True))
    return changed, diff


def batch_rows(res: Results, args: argparse.Namespace, home: Path, quantize: str, tickets: list[dict[str, Any]],
               composition: list[dict[str, Any]]) -> None:
    """Batch routing of the production triage in `home`: the same tickets through the bare `decide_batch` (in this
    process) and through the API (a server process), in batches of --batch-size; then each of the `composition`
    tickets alone and in batches, to count answers that change with the batch."""
    from routing.models import DecisionThresholds, TicketIn

    data = "sim tickets, production triage" + (", int8 embeddings" if quantize == "int8" else "")
    print(f"{data}: bare batches ...", flush=True)
    bundle, _, decide_batch = load_engine("real", home, quantize=quantize)
    th = DecisionThresholds()
    decide_batch(bundle=bundle, tickets=[TicketIn(**t) for t in composition[:args.batch_size]], thresholds=th)
    tbatch = [TicketIn(**t) for t in tickets]
    s = time.perf_counter()
    for i in range(0, len(tbatch), args.batch_size):
        decide_batch(bundle=bundle, tickets=tbatch[i:i + args.batch_size], thresholds=th)
    bare_rate = len(tbatch) / (time.perf_counter() - s)
    changed, diff = _composition(bundle, decide_batch, [TicketIn(**t) for t in composition], args.batch_size)
    del bundle
    key = _make_key(home, "helpdesk")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DESKPILOT_HOME": str(home), "DESKPILOT_EMBEDDING_QUANTIZE": quantize}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--model", "real", "--port", str(port)], env=env)
    try:
        _wait_ready(url, proc)
        _batches(url, key, composition[:args.batch_size], args.batch_size)  # warm-up: connection, lazy loads
        print(f"{data}: served batches ...", flush=True)
        done, wall, errors = _batches(url, key, tickets, args.batch_size)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    res.add(f"route batch of {args.batch_size}", data, "tickets/s", done / wall, baseline=bare_rate,
            goal=">= 300 tickets/s")
    res.add(f"route batch of {args.batch_size}", data, "errors", errors)
    res.add("bare model, batched", data, "tickets/s", bare_rate)
    res.add(f"alone vs in batches of {args.batch_size} ({len(composition)} tickets)", data, "answers changed",
            changed, goal="<= 0")
    res.add(f"alone vs in batches of {args.batch_size} ({len(composition)} tickets)", data,
            "largest confidence difference", diff)


def only_batch(args: argparse.Namespace) -> None:
    """Only batch routing (float, then int8 unless --no-int8), each bare and served, and whether answers change
    with the batch; rows go to bench/results/service_batch.json."""
    HOME.mkdir(parents=True, exist_ok=True)
    ensure_trained(HOME)
    res = Results("service_batch", extra_env={"model": "production triage", "batch size": args.batch_size,
                                              "server": "uvicorn, 1 worker, SQLite WAL"})
    tickets = _tickets(args.batch_tickets + 200)
    batch_rows(res, args, HOME, "none", tickets[200:], tickets[:200])
    if not args.no_int8:
        HOME_INT8.mkdir(parents=True, exist_ok=True)
        ensure_trained(HOME_INT8, quantize="int8")
        tickets = _tickets(args.batch_tickets + 200)
        batch_rows(res, args, HOME_INT8, "int8", tickets[200:], tickets[:200])
    res.write()


def main() -> None:
    """Run the benchmark and write bench/results/service.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("auto", "real", "tfidf"), default="auto")
    ap.add_argument("--rate", type=float, default=50.0, help="open-loop request rate (req/s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    ap.add_argument("--clients", type=int, default=8, help="saturating clients in the closed-loop phase")
    ap.add_argument("--max-in-flight", type=int, default=64, help="bound on concurrent requests (open loop)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--batch-tickets", type=int, default=2000)
    ap.add_argument("--seq-requests", type=int, default=300,
                    help="requests of the sequential phase (the same tickets are timed through the bare model)")
    ap.add_argument("--no-int8", action="store_true",
                    help="skip the second configuration (models trained and served with int8 embeddings)")
    ap.add_argument("--heavy-seconds", type=float, default=30.0,
                    help="length of each trivial-request phase (alone, then beside heavy requests); 0 skips it")
    ap.add_argument("--only-heavy", action="store_true",
                    help="only the trivial-beside-heavy phases (writes bench/results/service_heavy.json)")
    ap.add_argument("--only-batch", action="store_true",
                    help="only batch routing, bare and served, float and int8, and answers alone vs in batches "
                    "(writes bench/results/service_batch.json)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = args.model if args.model != "auto" else ("real" if triage_available() else "tfidf")
    if args.serve:
        serve(model, Path(os.environ.get("DESKPILOT_HOME", str(HOME))), args.port)
        return
    if args.only_heavy:
        only_heavy(model, args)
        return
    if args.only_batch:
        only_batch(args)
        return

    HOME.mkdir(parents=True, exist_ok=True)
    if model == "real":
        ensure_trained(HOME)
    label = "production triage" if model == "real" else "tf-idf stand-in"
    res = Results("service", extra_env={"model": label, "rate": args.rate, "seconds": args.seconds,
                                        "clients": args.clients, "server": "uvicorn, 1 worker, SQLite WAL",
                                        "sequential client": "http.client, one keep-alive connection"})

    n_open = int(args.rate * args.seconds)
    n_closed = 4000
    n_seq = args.seq_requests
    tickets = _tickets(150 + n_seq + n_open + n_closed + args.batch_tickets)
    warm, seq_t = tickets[:150], tickets[150:150 + n_seq]
    open_t = tickets[150 + n_seq:150 + n_seq + n_open]
    closed_t = tickets[150 + n_seq + n_open:150 + n_seq + n_open + n_closed]
    batch_t = tickets[150 + n_seq + n_open + n_closed:]

    # Bare model, in this process, on exactly the tickets the sequential and the fixed-rate phases send (before the
    # server competes for the CPU). The triage caches embeddings of texts it has seen, so no text is timed twice
    # here, and the server (another process) starts with an empty cache.
    from routing.models import DecisionThresholds, TicketIn

    print(f"loading the bare model ({label}) ...", flush=True)
    bundle, decide, decide_batch = load_engine(model, HOME)
    th = DecisionThresholds()
    for t in warm[:20]:  # warm-up on tickets the timed loops do not repeat
        decide(bundle=bundle, ticket=TicketIn(**t), thresholds=th)

    def bare_times(engine: Any, ts: list[dict[str, Any]]) -> list[float]:
        out: list[float] = []
        for t in [TicketIn(**t) for t in ts]:
            s = time.perf_counter()
            decide(bundle=engine, ticket=t, thresholds=th)
            out.append(time.perf_counter() - s)
        return out

    # Each bare measurement runs the very tickets (and as many) as the served phase it is compared with.
    bare = bare_times(bundle, seq_t)
    bare_open = bare_times(bundle, open_t)
    bare_batch_rate = float("nan")
    if decide_batch is not None:
        # Tickets the bare model has not seen: the ones above sit in the triage's embedding cache.
        tbatch = [TicketIn(**t) for t in batch_t]
        s = time.perf_counter()
        for i in range(0, len(tbatch), args.batch_size):
            decide_batch(bundle=bundle, tickets=tbatch[i:i + args.batch_size], thresholds=th)
        bare_batch_rate = len(tbatch) / (time.perf_counter() - s)
    del bundle

    # Server.
    key, agent_key = _make_key(HOME, "helpdesk"), _make_key(HOME, "agent")
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DESKPILOT_HOME": str(HOME)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--model", model, "--port", str(port)], env=env)
    try:
        print(f"waiting for the server at {url} ...", flush=True)
        _wait_ready(url, proc)
        asyncio.run(_closed_loop(url, key, warm, 4, 5.0))  # warm-up: connections, caches, lazy loads
        data = f"sim tickets, {label}"
        print(f"sequential: one client, {len(seq_t)} requests ...", flush=True)
        slat, serr = _sequential(url, key, seq_t)
        res.add("route, 1 client sequential", data, "p50 ms", _pct(slat, 50))
        res.add("route, 1 client sequential", data, "p99 ms", _pct(slat, 99))
        res.add("route, 1 client sequential", data, "errors", serr)
        print(f"open loop: {args.rate:g} req/s for {args.seconds:g} s ...", flush=True)
        lat, lat_sched, err, wall = asyncio.run(
            _open_loop(url, key, open_t, args.rate, args.seconds, args.max_in_flight))
        res.add("route @ fixed rate", data, "offered req/s", args.rate)
        res.add("route @ fixed rate", data, "achieved req/s", len(lat) / wall)
        res.add("route @ fixed rate", data, "p50 ms", _pct(lat, 50))
        res.add("route @ fixed rate", data, "p99 ms", _pct(lat, 99), goal="< 50 ms @ 50 req/s")
        res.add("route @ fixed rate", data, "p99 ms from due time", _pct(lat_sched, 99))
        res.add("route @ fixed rate", data, "errors", err)
        print(f"closed loop: {args.clients} clients for {args.seconds:g} s ...", flush=True)
        clat, cerr, cwall = asyncio.run(_closed_loop(url, key, closed_t, args.clients, args.seconds))
        res.add(f"route, {args.clients} saturating clients", data, "throughput req/s", len(clat) / cwall)
        res.add(f"route, {args.clients} saturating clients", data, "p50 ms", _pct(clat, 50))
        res.add(f"route, {args.clients} saturating clients", data, "p99 ms", _pct(clat, 99))
        res.add(f"route, {args.clients} saturating clients", data, "errors", cerr)
        print(f"batches of {args.batch_size} ...", flush=True)
        done, bwall, berr = _batches(url, key, batch_t, args.batch_size)
        res.add(f"route batch of {args.batch_size}", data, "tickets/s", done / bwall,
                baseline=bare_batch_rate, goal=">= 300 tickets/s")
        res.add(f"route batch of {args.batch_size}", data, "errors", berr)
        if model != "real":
            # assist needs the production intent model (predict_with_oos), next-activity model and ticket memory
            res.add("assist", data, "not measured", "needs the production models (run without --model tfidf)")
        else:
            from api.settings import Settings

            # The knowledge hub embeds with its own model (DESKPILOT_KB_EMBEDDING_MODEL, default all-mpnet-base-v2):
            # assist's articles and drafts are searched with it, routing stays on the bundled MiniLM.
            res.add("assist: knowledge-hub model", data, "model", Settings(home=HOME).kb_embedding_model_path.name)
            print("assist: one agent client, sequential, then 10 req/s ...", flush=True)
            routed = [t["ticket_id"] for t in open_t]
            alat, aerr, _ = asyncio.run(_assist_loop(url, agent_key, routed[:60], 0.0))
            res.add("assist, 1 client sequential", data, "p50 ms", _pct(alat, 50))
            res.add("assist, 1 client sequential", data, "p99 ms", _pct(alat, 99))
            res.add("assist, 1 client sequential", data, "errors", aerr)
            alat, aerr, awall = asyncio.run(_assist_loop(url, agent_key, routed[60:60 + int(10 * args.seconds)], 10.0))
            res.add("assist @ 10 req/s", data, "achieved req/s", len(alat) / awall)
            res.add("assist @ 10 req/s", data, "p50 ms", _pct(alat, 50))
            res.add("assist @ 10 req/s", data, "p99 ms", _pct(alat, 99), goal="< 150 ms @ 10 req/s")
            res.add("assist @ 10 req/s", data, "errors", aerr)
        if args.heavy_seconds > 0:
            keys = {"helpdesk": key, "agent": agent_key, "knowledge_manager": _make_key(HOME, "knowledge_manager"),
                    "analyst": _make_key(HOME, "analyst")}
            heavy_rows(res, url, keys, [t["ticket_id"] for t in open_t], data, args.heavy_seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    bare_p50, bare_open_p50 = _pct(bare, 50), _pct(bare_open, 50)
    res.add("bare model, same tickets", data, "p50 ms", bare_p50)
    res.add("bare model, same tickets", data, "p99 ms", _pct(bare, 99))
    res.add("bare model, fixed-rate tickets", data, "p50 ms", bare_open_p50)
    res.add("bare model, batched", data, "tickets/s", bare_batch_rate)
    seq_p50 = _pct(slat, 50)
    res.add("API overhead, sequential", data, "(API p50 - model p50)/model p50", (seq_p50 - bare_p50) / bare_p50,
            goal="< 0.30")
    res.add("API overhead, at fixed rate", data, "(API p50 - model p50)/model p50",
            (_pct(lat, 50) - bare_open_p50) / bare_open_p50, goal="< 0.30")
    if model == "real" and not args.no_int8:
        int8_rows(res, args, _tickets(450 + n_open + args.batch_tickets), bare_batch_rate)
    res.write()


if __name__ == "__main__":
    main()
