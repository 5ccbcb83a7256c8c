"""Web app benchmark: server-side render time of every page through the real HTTP stack (p50 / p99 per page).

The server runs in its own process (`deskpilot serve`, one worker) on a home seeded by the demo's own pipeline
(simulate, ingest, mine, train, knowledge base), with live tickets routed and streamed through the JSON API. Each
page is fetched by a signed-in user of its role (a real session cookie), sequentially, after warm-up requests;
the time is from request sent to body received on 127.0.0.1, so it includes routing, the session check, the
service calls and the template.

To add pages, append `Page(...)` rows to a scenario's list. A scenario is one seeded home and the pages timed on
it: `SEEDED` below (the demo home); an analyst scenario on a large log can bring its own home builder.

    nice -n 10 .venv/bin/python bench/ui.py                      # demo home of 3000 cases
    DESKPILOT_BENCH_UI_CASES=1000 nice -n 10 .venv/bin/python bench/ui.py --requests 20
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench._common import REPO, Results  # noqa: E402

HOME = Path(os.environ.get("DESKPILOT_BENCH_HOME", "/tmp/deskpilot-bench-ui"))
CASES = int(os.environ.get("DESKPILOT_BENCH_UI_CASES", "3000"))
PASSWORD = "bench-ui-password-1"
GOAL = "< 300 ms"


@dataclass(frozen=True)
class Page:
    """One page to time: a name, the role that opens it, and its URL (`{ticket}` etc. filled from the seed)."""

    name: str
    role: str | None  # None: fetched signed out
    url: str
    goal: str = GOAL


@dataclass
class Seed:
    """What a scenario's home holds that URLs refer to."""

    ticket: str = ""  # a live ticket left to people (triage or suggest)
    retriaged: str = ""  # a ticket a customer message re-triaged
    user: str = ""  # a user's name
    people: list[str] = field(default_factory=list)  # every live ticket left to people, in routing order
    extra: dict[str, str] = field(default_factory=dict)

    def fill(self, url: str) -> str:
        """The URL with its placeholders filled."""
        return url.format(ticket=self.ticket, retriaged=self.retriaged, user=self.user, **self.extra)


# ---------------------------------------------------------------- the pages, per scenario

SEEDED: list[Page] = [
    Page("sign-in form", None, "/login"),
    Page("account", "agent", "/account"),
    Page("agent: triage queue", "agent", "/agent/queue"),
    Page("agent: queue filtered (triage, one team)", "agent", "/agent/queue?decision=triage&age=all"),
    Page("agent: ticket page", "agent", "/agent/tickets/{ticket}"),
    Page("agent: ticket assist panel (actions, passages, draft)", "agent", "/agent/tickets/{ticket}/assist"),
    Page("agent: ticket with re-triages", "agent", "/agent/tickets/{retriaged}"),
    Page("admin: users", "admin", "/admin/users"),
    Page("admin: API keys", "admin", "/admin/keys"),
    Page("admin: models", "admin", "/admin/models"),
    Page("admin: audit log", "admin", "/admin/audit"),
    Page("admin: audit log filtered", "admin", "/admin/audit?method=POST&path_prefix=/agent/"),
    Page("admin: settings", "admin", "/admin/settings"),
    Page("admin: health", "admin", "/admin/health"),
    Page("knowledge: articles", "knowledge_manager", "/knowledge"),
    Page("knowledge: articles searched and filtered", "knowledge_manager", "/knowledge?q=password&status=published"),
    Page("knowledge: article", "knowledge_manager", "/knowledge/articles/1"),
    Page("knowledge: editor with preview", "knowledge_manager", "/knowledge/articles/1/edit"),
    Page("knowledge: version diff", "knowledge_manager", "/knowledge/articles/1/versions/1"),
    Page("knowledge: reviews", "knowledge_manager", "/knowledge/reviews"),
    Page("knowledge: gaps and article effects (cached report)", "knowledge_manager", "/knowledge/gaps"),
]

# The analyst pages on one mined run of a simulated log (ANALYST_CASES cases); `{run}` / `{case}` from the seed.
ANALYST_CASES = int(os.environ.get("DESKPILOT_BENCH_UI_ANALYST_CASES", "100000"))
ANALYST_HOME = Path(os.environ.get("DESKPILOT_BENCH_ANALYST_HOME", "/tmp/deskpilot-bench-ui-analyst"))
ANALYST: list[Page] = [
    Page("analyst: runs", "analyst", "/analyst"),
    Page("analyst: run overview (KPIs per week)", "analyst", "/analyst/runs/{run}"),
    Page("analyst: process map", "analyst", "/analyst/runs/{run}/map"),
    Page("analyst: process map, performance, sliders", "analyst",
         "/analyst/runs/{run}/map?view=performance&activities=80&paths=30"),
    Page("analyst: process map filtered (cached filter)", "analyst",
         "/analyst/runs/{run}/map?channel=email&segment=smb&team=Billing+L2"),
    Page("analyst: variant explorer", "analyst", "/analyst/runs/{run}/variants"),
    Page("analyst: variant explorer sorted by median time", "analyst",
         "/analyst/runs/{run}/variants?sort=median&order=desc"),
    Page("analyst: cases of a map edge", "analyst",
         "/analyst/runs/{run}/cases?kind=edge&a=Triage&b=Assign+to+team&sort=detail"),
    Page("analyst: cases of a misrouting pair", "analyst",
         "/analyst/runs/{run}/cases?kind=pair&a=Accounts+L2&b=Billing+L2"),
    Page("analyst: case timeline", "analyst", "/analyst/runs/{run}/cases/{case}"),
    Page("analyst: findings", "analyst", "/analyst/runs/{run}/findings"),
    Page("analyst: compare two periods", "analyst",
         "/analyst/compare?arun={run}&brun={run}&a_to=2026-02-15&b_from=2026-02-16"),
]
FILTER_GOAL = "< 1000 ms"


# ---------------------------------------------------------------- seeding and serving

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DESKPILOT_HOME": str(home), "DESKPILOT_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PYTHONPATH": str(REPO)}


def build_demo_home(home: Path, cases: int) -> None:
    """The demo pipeline into `home` (once; reused while home/registry exists), plus one user per role."""
    os.environ["DESKPILOT_HOME"] = str(home)
    from sqlmodel import Session, SQLModel

    from api.app import _import_tables, make_engine
    from api.auth import ROLES
    from api.commands.demo import run_pipeline
    from api.settings import Settings
    from api.web.accounts import create_user
    from core.errors import Conflict

    settings = Settings(home=home)
    if not (home / "registry").is_dir():
        run_pipeline(settings=settings, cases=cases, seed=7)
    engine = make_engine(settings.db_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for role in ROLES:
            with contextlib.suppress(Conflict):
                create_user(session=session, username=f"bench-{role}", password=PASSWORD, role=role)
    engine.dispose()


def _helpdesk_key(home: Path) -> str:
    from sqlmodel import Session

    from api.app import make_engine
    from api.auth import create_key
    from api.settings import Settings

    engine = make_engine(Settings(home=home).db_url)
    with Session(engine) as session:
        key = create_key(session=session, name=f"bench-ui-{os.getpid()}-{time.time_ns()}", role="helpdesk").secret
    engine.dispose()
    return key


def seed_live(base: str, key: str, home: Path, n: int) -> Seed:
    """Route the newest `n` simulated tickets through the API with their first events; re-triage a few."""
    import httpx

    with open(home / "sim" / "tickets.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(home / "sim" / "events.csv", newline="", encoding="utf-8") as fh:
        events: dict[str, list[dict[str, str]]] = {}
        for e in csv.DictReader(fh):
            events.setdefault(e["case_id"], []).append(e)
    seed = Seed()
    other_body = {r["intent"]: r["body"] for r in rows[: len(rows) // 2]}
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as client:
        for i, r in enumerate(rows[-n:]):
            tid = "UI" + r["case_id"]
            resp = client.post("/v1/tickets/route", json={
                "ticket_id": tid, "subject": r["subject"], "body": r["body"], "channel": r["channel"],
                "segment": r["segment"], "priority": r["priority"], "created_at": r["created_at"]})
            resp.raise_for_status()
            if resp.json()["result"]["decision"] != "auto":
                seed.ticket = seed.ticket or tid
                seed.people.append(tid)
            for e in events.get(r["case_id"], [])[:3]:
                client.post(f"/v1/tickets/{tid}/events", json={
                    "activity": e["activity"], "timestamp": e["timestamp"], "resource": e["resource"] or None,
                    "group": e["group"] or None, "channel": e["channel"] or None}).raise_for_status()
            if i < 10:
                msg = next(b for k, b in other_body.items() if k != r["intent"])
                out = client.post(f"/v1/tickets/{tid}/events", json={
                    "activity": "Customer replied", "author_type": "customer", "message": msg})
                out.raise_for_status()
                if out.json().get("decision") is not None and not seed.retriaged:
                    seed.retriaged = tid
    seed.retriaged = seed.retriaged or seed.ticket
    seed.user = "bench-agent"
    return seed


def serve(home: Path, ready: str = "/readyz") -> tuple[str, subprocess.Popen[bytes]]:
    """`deskpilot serve` on a free port in its own process; returns its URL once `ready` answers 200."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=_env(home),
                            cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server not ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server (SIGINT, then kill)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---------------------------------------------------------------- timing

def signed_in_client(base: str, username: str | None) -> Any:
    """An httpx client holding a signed-in session of `username` (or signed out)."""
    import httpx

    client = httpx.Client(base_url=base, timeout=60)
    if username is None:
        return client
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token, "no CSRF token on the sign-in page"
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)})
    if r.status_code != 303:
        raise SystemExit(f"sign-in as {username} failed: HTTP {r.status_code}")
    return client


def time_pages(res: Results, base: str, pages: list[Page], seed: Seed, data: str, *, requests: int,
               warmup: int = 3, username: Callable[[str], str] = lambda role: f"bench-{role}") -> None:
    """p50 / p99 of each page over `requests` sequential fetches after `warmup`; a non-200 answer stops the run."""
    clients: dict[str | None, Any] = {}
    try:
        for page in pages:
            if page.role not in clients:
                clients[page.role] = signed_in_client(base, None if page.role is None else username(page.role))
            client = clients[page.role]
            url = seed.fill(page.url)
            times: list[float] = []
            for i in range(warmup + requests):
                t0 = time.perf_counter()
                r = client.get(url)
                dt = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{page.name}: GET {url} answered {r.status_code}: {r.text[:300]}")
                if i >= warmup:
                    times.append(dt)
            times.sort()
            p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
            res.add(f"page: {page.name}", data, "p50 ms", statistics.median(times), goal=page.goal)
            res.add(f"page: {page.name}", data, "p99 ms", p99, goal=page.goal)
    finally:
        for c in clients.values():
            c.close()


def time_first_opens(res: Results, base: str, tickets: list[str], data: str, *, requests: int) -> None:
    """The assist panel opened once on each of `requests` tickets nobody opened before (nothing of theirs cached
    yet; the first of `tickets` only warms up): what an agent waits for the first time they open a ticket."""
    client = signed_in_client(base, "bench-agent")
    try:
        client.get(f"/agent/tickets/{tickets[0]}/assist").raise_for_status()  # models and index loaded
        times = []
        for tid in tickets[1:requests + 1]:
            t0 = time.perf_counter()
            r = client.get(f"/agent/tickets/{tid}/assist")
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"assist panel of {tid} answered {r.status_code}: {r.text[:300]}")
        times.sort()
        p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        name = "page: agent: ticket assist panel, first open of each ticket (uncached)"
        res.add(name, data, "p50 ms", statistics.median(times), goal=GOAL)
        res.add(name, data, "p99 ms", p99, goal=GOAL)
    finally:
        client.close()


def run_seeded(res: Results, *, cases: int, live: int, requests: int) -> None:
    """The demo home scenario: SEEDED pages, then the assist panel's first opens on tickets not opened before."""
    build_demo_home(HOME, cases)
    key = _helpdesk_key(HOME)
    base, proc = serve(HOME)
    try:
        seed = seed_live(base, key, HOME, live)
        data = f"demo home: {cases:,} simulated cases, {live} live tickets"
        time_pages(res, base, SEEDED, seed, data, requests=requests)
        fresh = [t for t in seed.people if t not in (seed.ticket, seed.retriaged)]
        time_first_opens(res, base, fresh, data, requests=min(requests, len(fresh) - 1))
    finally:
        stop(proc)


def build_analyst_home(home: Path, cases: int) -> Seed:
    """A home with users and one mined run of a simulated log of `cases` cases (built once, reused)."""
    os.environ["DESKPILOT_HOME"] = str(home)
    from sqlmodel import Session, SQLModel

    from api.app import _import_tables, make_engine
    from api.auth import ROLES
    from api.insight_runs import RunManager, RunStore
    from api.settings import Settings
    from api.web.accounts import create_user
    from core.errors import Conflict

    settings = Settings(home=home)
    engine = make_engine(settings.db_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for role in ROLES:
            with contextlib.suppress(Conflict):
                create_user(session=session, username=f"bench-{role}", password=PASSWORD, role=role)
    engine.dispose()
    store = RunStore(home / "analyst")
    done = [r for r in store.runs() if r.status == "done" and r.n_cases == cases]
    if done:
        meta = done[0]
    else:
        from insight.simulate import simulate

        sim = simulate(n_cases=cases, seed=7)
        meta = store.new_run(name=f"simulated {cases:,} cases", source="bench", created_by="bench")
        meta = RunManager(store).start(meta, lambda: sim.log, background=False)
        if meta.status != "done":
            raise SystemExit(f"mining the bench log failed: {meta.error}")
    import polars as pl

    first_case = pl.read_parquet(home / "analyst" / "runs" / meta.id / "cases.parquet", columns=["case_id"])
    return Seed(extra={"run": meta.id, "case": str(first_case["case_id"][0])})


def wide_filter_urls(run: str, n: int) -> list[str]:
    """`n` different date-only filters on the map, each keeping about half of the cases or more (the miner then
    runs on most of the log: the worst case of a new filter)."""
    import datetime as dt

    return [f"/analyst/runs/{run}/map?from={dt.date(2026, 1, 5) + dt.timedelta(days=i)}&to=2026-12-31"
            for i in range(n)]


def filter_urls(run: str, n: int) -> list[str]:
    """`n` different filters (never the same twice, so none is answered from the cache)."""
    import datetime as dt

    teams = ["Billing L2", "Accounts L2", "Logistics L2", "Tech Support L2", "Service Desk L1"]
    channels = ["email", "chat", "phone", "portal"]
    out = []
    for i in range(n):
        start = dt.date(2026, 1, 5) + dt.timedelta(days=i % 40)
        end = start + dt.timedelta(days=20 + i % 30)
        kind = i % 3
        q = f"from={start}&to={end}&team={teams[i % len(teams)].replace(' ', '+')}&channel={channels[i % 4]}"
        path = ("map", "variants", "")[kind]
        out.append(f"/analyst/runs/{run}/{path}?{q}".replace("/?", "?"))
    return out


def time_filters(res: Results, base: str, urls: list[str], data: str,
                 name: str = "filter: new filter on map / variants / overview (time, team, channel), uncached") -> None:
    """Each filter asked once (uncached): p50 / p99 / max over all of them."""
    client = signed_in_client(base, "bench-analyst")
    try:
        times = []
        for url in urls:
            t0 = time.perf_counter()
            r = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"filter GET {url} answered {r.status_code}: {r.text[:300]}")
        times.sort()
        p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        res.add(name, data, "p50 ms", statistics.median(times), goal=FILTER_GOAL)
        res.add(name, data, "p99 ms", p99, goal=FILTER_GOAL)
        res.add(name, data, "max ms", times[-1], goal=FILTER_GOAL)
    finally:
        client.close()


def run_analyst(res: Results, *, cases: int, requests: int, filters: int) -> None:
    """The analyst scenario: ANALYST pages and uncached filters on one mined run."""
    seed = build_analyst_home(ANALYST_HOME, cases)
    base, proc = serve(ANALYST_HOME, ready="/healthz")  # no models in this home: the analyst pages need none
    try:
        data = f"mined run of a simulated log: {cases:,} cases"
        time_pages(res, base, ANALYST, seed, data, requests=requests)
        time_filters(res, base, filter_urls(seed.extra["run"], filters), data)
        time_filters(res, base, wide_filter_urls(seed.extra["run"], max(5, filters // 3)), data,
                     name="filter: new date range keeping half the cases or more, map, uncached")
    finally:
        stop(proc)


def keep_other_scenario(res: Results) -> None:
    """With --only, the other scenario's rows already in bench/results/ui.json are kept (ahead of the new ones)."""
    import json

    from bench._common import RESULTS, Row

    old = RESULTS / "ui.json"
    if not old.is_file():
        return
    ran = {r.data for r in res.rows}
    kept = [Row(**r) for r in json.loads(old.read_text())["rows"] if r["data"] not in ran]
    res.rows[:0] = kept


def main() -> None:
    """Run the scenarios and write bench/results/ui.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="Timed requests per page.")
    parser.add_argument("--live", type=int, default=200, help="Live tickets routed into the demo home.")
    parser.add_argument("--filters", type=int, default=30, help="Distinct (uncached) filters timed on the run.")
    parser.add_argument("--only", choices=("seeded", "analyst"), default=None, help="Run one scenario only.")
    args = parser.parse_args()
    res = Results("ui", extra_env={"cases": CASES, "analyst_cases": ANALYST_CASES,
                                   "requests_per_page": args.requests})
    if args.only in (None, "seeded"):
        run_seeded(res, cases=CASES, live=args.live, requests=args.requests)
    if args.only in (None, "analyst"):
        run_analyst(res, cases=ANALYST_CASES, requests=args.requests, filters=args.filters)
    if args.only is not None:
        keep_other_scenario(res)
    print(f"wrote {res.write()}")


if __name__ == "__main__":
    main()
