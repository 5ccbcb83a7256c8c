"""kill -9 durability: `deskpilot serve` killed during mixed writes loses no acknowledged write and no audit row.

Each run starts the real CLI server (`deskpilot serve`, one worker) in a fresh home, on SQLite (the default file in
the home) or PostgreSQL (a schema of its own), with a routing model trained into its registry. Client threads then
write a mix of the API's writes — route a new ticket, add an event, add feedback, create a published knowledge-base
article, edit it — and the server is sent SIGKILL while requests are in flight. The server is started again on the
same home and database, and every write that was answered 2xx before the kill is looked up: the ticket, event,
feedback id, article and article version must be stored, each with its audit row (read through `GET /v1/audit`),
and the knowledge-base index must agree with SQL (`GET /v1/kb/consistency` and `/readyz`).

    nice -n 10 .venv/bin/python bench/durability.py                 # 5 runs on SQLite and 5 on PostgreSQL
    nice -n 10 .venv/bin/python bench/durability.py --runs 2 --db sqlite

tests/api/test_durability.py runs one kill per database in CI through `run_kill9` below.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "dpk_durability-admin-" + "x" * 24  # the bootstrap admin key of the throw-away homes below
SUBJECTS = ["I was charged twice for my invoice", "reset my password please", "where is my parcel",
            "cancel my subscription", "the app crashes on login", "refund for a damaged item"]


@dataclass
class Acked:
    """Writes the server answered 2xx before it was killed, and the audit rows each of them needs."""

    tickets: set[str] = field(default_factory=set)
    events: dict[str, set[int]] = field(default_factory=dict)  # ticket -> event ids
    feedback: dict[str, set[int]] = field(default_factory=dict)  # ticket -> feedback ids
    articles: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> (acked version, body of it)
    audit_needed: Counter[tuple[str, str, str | None, int]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def writes(self) -> int:
        """How many acknowledged writes."""
        return sum(self.audit_needed.values())


@dataclass
class RunResult:
    """What one kill -9 run found after the restart."""

    db: str
    acked_writes: int
    lost_writes: int
    lost_audit_rows: int
    index_consistent: bool
    in_flight_at_kill: int
    problems: list[str]
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # start, writes, restart, verify (seconds)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_registry(registry: Path, n_cases: int = 600, seed: int = 7, sim: Any = None) -> None:
    """Train the intent model (no embeddings: fast) into `registry` from a simulated log."""
    from flows.training import train_all
    from insight.models.registry import ModelRegistry

    if sim is None:
        from insight.simulate import simulate

        sim = simulate(n_cases=n_cases, seed=seed)
    train_all(log=sim.log, tickets=sim.tickets, registry=ModelRegistry(registry), embedder=None, tasks=("intent",))


class Server:
    """`deskpilot serve` as a child process on loopback."""

    def __init__(self, home: Path, db_url: str | None, log_path: Path) -> None:
        self.home, self.db_url, self.log_path = home, db_url, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and wait until /readyz answers 200."""
        env = {**os.environ, "DESKPILOT_HOME": str(self.home), "DESKPILOT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
               "DESKPILOT_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "ANONYMIZED_TELEMETRY": "False",
               # the working tree's code, also for packages added since the venv's editable install
               "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        if self.db_url:
            env["DESKPILOT_DATABASE_URL"] = self.db_url
        else:
            env.pop("DESKPILOT_DATABASE_URL", None)
        exe = Path(sys.executable).with_name("deskpilot")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "api.cli"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*cmd, "serve", "--port", str(self.port)], env=env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"deskpilot serve exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=5)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"deskpilot serve not ready after {timeout} s: {last[:500]}; its log ends: "
                           f"{self.log_path.read_text(errors='replace')[-1500:]}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown handler runs) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop the server politely (SIGTERM), then for good."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _client_loop(url: str, acked: Acked, stop: threading.Event, rng: random.Random, in_flight: list[int],
                 errors: list[str]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    mine_tickets: list[str] = []
    mine_articles: list[int] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        while not stop.is_set():
            op = rng.choices(["route", "event", "feedback", "article", "patch"], [3, 3, 2, 1, 2])[0]
            if op in ("event", "feedback") and not mine_tickets:
                op = "route"
            if op == "patch" and not mine_articles:
                op = "article"
            with acked.lock:
                in_flight[0] += 1
            try:
                if op == "route":
                    tid = f"DUR-{uuid.uuid4().hex[:12]}"
                    r = c.post("/v1/tickets/route", json={"ticket_id": tid, "subject": rng.choice(SUBJECTS),
                                                          "body": "please help"})
                    if r.status_code == 201:
                        with acked.lock:
                            acked.tickets.add(tid)
                            acked.audit_needed[("POST", "/v1/tickets/route", tid, 201)] += 1
                        mine_tickets.append(tid)
                elif op == "event":
                    tid = rng.choice(mine_tickets)
                    r = c.post(f"/v1/tickets/{tid}/events", json={"activity": "Assign", "group": "Billing"})
                    if r.status_code == 201:
                        with acked.lock:
                            acked.events.setdefault(tid, set()).add(int(r.json()["event"]["id"]))
                            acked.audit_needed[("POST", f"/v1/tickets/{tid}/events", None, 201)] += 1
                elif op == "feedback":
                    tid = rng.choice(mine_tickets)
                    r = c.post(f"/v1/tickets/{tid}/feedback", json={"comment": "looks right"})
                    if r.status_code == 201:
                        fid = int(r.json()["id"])
                        with acked.lock:
                            acked.feedback.setdefault(tid, set()).add(fid)
                            acked.audit_needed[("POST", f"/v1/tickets/{tid}/feedback", f"{tid}/feedback/{fid}",
                                                201)] += 1
                elif op == "article":
                    body = f"Steps for case {uuid.uuid4().hex[:8]}: open settings, then billing, then refunds."
                    r = c.post("/v1/kb/articles", json={"title": f"How to fix {rng.choice(SUBJECTS)}",
                                                        "body": body, "status": "published"})
                    if r.status_code == 201:
                        aid = int(r.json()["id"])
                        with acked.lock:
                            acked.articles[aid] = (int(r.json()["version"]), body)
                            acked.audit_needed[("POST", "/v1/kb/articles", str(aid), 201)] += 1
                        mine_articles.append(aid)
                else:
                    aid = rng.choice(mine_articles)
                    body = f"Updated steps {uuid.uuid4().hex[:8]}: open settings, billing, refunds, confirm."
                    r = c.patch(f"/v1/kb/articles/{aid}", json={"body": body})
                    if r.status_code == 200:
                        with acked.lock:
                            acked.articles[aid] = (int(r.json()["version"]), body)
                            acked.audit_needed[("PATCH", f"/v1/kb/articles/{aid}", None, 200)] += 1
                if r.status_code >= 500:
                    errors.append(f"{op}: {r.status_code} {r.text[:200]}")
            except httpx.HTTPError:
                if not stop.is_set():
                    time.sleep(0.05)  # the server is gone: nothing was acknowledged
            finally:
                with acked.lock:
                    in_flight[0] -= 1


def _all_audit(c: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        r = c.get("/v1/audit", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
        r.raise_for_status()
        page = r.json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def _verify(url: str, acked: Acked) -> tuple[int, int, bool, list[str]]:
    """(lost writes, lost audit rows, index consistent, problems) after the restart."""
    problems: list[str] = []
    lost = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as c:
        for tid in sorted(acked.tickets | set(acked.events) | set(acked.feedback)):
            r = c.get(f"/v1/tickets/{tid}")
            if r.status_code != 200:
                lost += 1 + len(acked.events.get(tid, ())) + len(acked.feedback.get(tid, ()))
                problems.append(f"ticket {tid}: {r.status_code}")
                continue
            t = r.json()
            events = {int(e["id"]) for e in t.get("events", [])}
            feedback = {int(f["id"]) for f in t.get("feedback", [])}
            for kind, want, got in (("events", acked.events.get(tid, set()), events),
                                    ("feedback", acked.feedback.get(tid, set()), feedback)):
                missing = want - got
                if missing:
                    lost += len(missing)
                    problems.append(f"ticket {tid}: {kind} {sorted(missing)} missing")
        for aid, (version, body) in sorted(acked.articles.items()):
            r = c.get(f"/v1/kb/articles/{aid}")
            if r.status_code != 200:
                lost += 1
                problems.append(f"article {aid}: {r.status_code}")
                continue
            a = r.json()
            # A later edit may have been stored but not answered before the kill: never older than acknowledged.
            if int(a["version"]) < version or (int(a["version"]) == version and a["body"] != body):
                lost += 1
                problems.append(f"article {aid}: version {a['version']} stored, {version} acknowledged")
        found: Counter[tuple[str, str, str | None, int]] = Counter()
        for row in _all_audit(c):
            key_obj = (row["method"], row["path"], row["object_id"], row["status"])
            key_any = (row["method"], row["path"], None, row["status"])
            found[key_obj] += 1
            if key_obj != key_any:
                found[key_any] += 1
        lost_audit = 0
        for key, n in acked.audit_needed.items():
            if found[key] < n:
                lost_audit += n - found[key]
                problems.append(f"audit {key}: {found[key]} rows for {n} acknowledged writes")
        cons = c.get("/v1/kb/consistency")
        ready = c.get("/readyz")
        consistent = cons.status_code == 200 and bool(cons.json().get("ok")) and ready.status_code == 200
        if not consistent:
            problems.append(f"consistency {cons.status_code} {cons.text[:300]}; readyz {ready.status_code} "
                            f"{ready.text[:300]}")
    return lost, lost_audit, consistent, problems


def run_kill9(*, home: Path, registry: Path, db_url: str | None, clients: int = 4, min_acked: int = 40,
              max_write_seconds: float = 20.0, seed: int = 0) -> RunResult:
    """One run: serve, write from `clients` threads, SIGKILL once `min_acked` writes (or the time) are acknowledged
    at a random moment soon after, restart on the same home and database, and verify."""
    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "registry").exists():
        shutil.copytree(registry, home / "registry")
    rng = random.Random(seed)
    server = Server(home, db_url, home / "serve.log")
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    server.start()
    phases["start"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    acked, stop, in_flight = Acked(), threading.Event(), [0]
    errors: list[str] = []
    threads = [threading.Thread(target=_client_loop, args=(server.url, acked, stop, random.Random(seed * 100 + i),
                                                           in_flight, errors), daemon=True)
               for i in range(clients)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + max_write_seconds
        while acked.writes < min_acked and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))  # the kill lands at an arbitrary point of the requests in flight
        with acked.lock:
            busy = in_flight[0]
        server.kill()
        stop.set()
        for t in threads:
            t.join(60)
        server.port = free_port()
        server.url = f"http://127.0.0.1:{server.port}"
        phases["writes"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        server.start()
        phases["restart"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        lost, lost_audit, consistent, problems = _verify(server.url, acked)
        phases["verify"] = round(time.monotonic() - t0, 1)
    finally:
        stop.set()
        server.stop()
    return RunResult(db="postgresql" if db_url else "sqlite", acked_writes=acked.writes, lost_writes=lost,
                     lost_audit_rows=lost_audit, index_consistent=consistent, in_flight_at_kill=busy,
                     problems=problems + errors, seconds=round(time.monotonic() - started, 1), phases=phases)


def _pg_schema(admin_url: str) -> tuple[str, str]:
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    schema = f"bench_dur_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in admin_url else "?"
    return schema, f"{admin_url}{sep}options={quote(f'-csearch_path={schema}')}"


def _drop_schema(admin_url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def main() -> None:
    """Run the benchmark and write bench/results/durability.json."""
    import tempfile

    sys.path.insert(0, str(REPO))
    from bench._common import Results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="kill -9 runs per database")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--min-acked", type=int, default=60, help="acknowledged writes before the kill may land")
    ap.add_argument("--pg-url", default=os.environ.get("DESKPILOT_TEST_POSTGRES_URL",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()
    # SIGTERM runs the cleanup below (servers stopped, PostgreSQL schemas dropped) like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    res = Results("durability", extra_env={"server": "deskpilot serve, 1 worker", "clients": args.clients,
                                           "runs_per_db": args.runs})
    with tempfile.TemporaryDirectory(prefix="deskpilot-durability-") as tmp:
        registry = Path(tmp) / "registry"
        print("training the intent model ...", flush=True)
        train_registry(registry)
        for db in dbs:
            results: list[RunResult] = []
            for i in range(args.runs):
                schema = None
                url = None
                if db == "postgresql":
                    schema, url = _pg_schema(args.pg_url)
                try:
                    r = run_kill9(home=Path(tmp) / f"{db}-{i}", registry=registry, db_url=url,
                                  clients=args.clients, min_acked=args.min_acked, seed=i)
                finally:
                    if schema is not None:
                        _drop_schema(args.pg_url, schema)
                results.append(r)
                print(f"{db} run {i + 1}: {r.acked_writes} acknowledged, {r.in_flight_at_kill} in flight at the "
                      f"kill, lost {r.lost_writes} writes / {r.lost_audit_rows} audit rows, index consistent "
                      f"{r.index_consistent} ({r.seconds} s)", flush=True)
                for p in r.problems[:10]:
                    print("   ", p, flush=True)
            data = f"{args.runs} kill -9 runs, {'SQLite file' if db == 'sqlite' else 'PostgreSQL'}"
            res.add("kill -9 during mixed writes", data, "acknowledged writes", sum(r.acked_writes for r in results))
            res.add("kill -9 during mixed writes", data, "requests in flight at the kills",
                    sum(r.in_flight_at_kill for r in results))
            res.add("kill -9 during mixed writes", data, "acknowledged writes lost",
                    sum(r.lost_writes for r in results), goal="<= 0")
            res.add("kill -9 during mixed writes", data, "audit rows lost",
                    sum(r.lost_audit_rows for r in results), goal="<= 0")
            res.add("kill -9 during mixed writes", data, "index consistent after every restart",
                    all(r.index_consistent for r in results), goal="True")
    res.write()


if __name__ == "__main__":
    main()
