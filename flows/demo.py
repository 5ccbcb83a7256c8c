"""The demo's loop on embedded defaults: simulate a contact center, ingest its log, mine it, train every model,
load the help-centre articles.

`deskpilot demo` (api/commands/demo.py) runs these steps in this order, printing each one's result, and serves the
API afterwards; the web tests and the benches seed a home folder the same way. Each step writes into the folders it
is given and returns what it made; the caller hands in what it read from the settings (keys, paths, the embedder,
the database session and the knowledge index).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from flows.training import TrainingReport, TrainingTickets, prepare_tickets, train_and_store

if TYPE_CHECKING:
    from sqlmodel import Session

    from core.embedding import Embedder
    from insight.eventlog.schema import EventLog
    from insight.mining.conformance import IntendedJourney
    from insight.mining.report import InsightReport
    from insight.simulate.engine import Simulation
    from knowledge_hub.index import KnowledgeIndex

EVENTS_FILE = "events.csv"
TICKETS_FILE = "tickets.csv"
TRUTH_FILE = "truth.json"
REPORT_JSON = "insight.json"
REPORT_HTML = "report.html"
ARTICLE_AUTHOR = "demo"


def simulate_center(folder: Path, *, cases: int, seed: int) -> Simulation:
    """Simulate a contact center of `cases` tickets and write its log, tickets and planted truth into `folder`."""
    from insight.eventlog import write_log
    from insight.simulate import simulate

    sim = simulate(n_cases=cases, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_log(sim.log, folder / EVENTS_FILE)
    sim.tickets.to_csv(folder / TICKETS_FILE, index=False)
    (folder / TRUTH_FILE).write_text(json.dumps(sim.truth.to_dict(), indent=1))
    return sim


def ingest_center(folder: Path, sim: Simulation, *, pseudonym_key: str) -> tuple[EventLog, TrainingTickets]:
    """The simulated log read back as a user's log is (cleaned, PII redacted, agents pseudonymized with the key),
    and the simulated tickets prepared as the service treats a ticket at the door (text redacted, person fields
    pseudonymized with the same key) before any model sees them."""
    from insight.eventlog import ingest

    log = ingest(folder / EVENTS_FILE, pseudonym_key=pseudonym_key)
    return log, prepare_tickets(sim.tickets, pseudonym_key=pseudonym_key)


def mine_center(log: EventLog, *, journey: IntendedJourney | None, out_dir: Path) -> InsightReport:
    """Mine the log against the designed journey; the report is written as JSON and HTML into `out_dir`."""
    from insight.mining import mine
    from insight.mining.html import write_html
    from insight.mining.report import MineConfig

    report = mine(log, config=MineConfig(journey=journey))
    out_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(out_dir / REPORT_JSON)
    write_html(report, out_dir / REPORT_HTML)
    return report


def train_center(log: EventLog, tickets: TrainingTickets, *, registry: Path, embedder: Embedder | None,
                 seed: int) -> TrainingReport:
    """Every model into the registry; what they learned from goes with them, the history a retrain adds to."""
    return train_and_store(log=log, tickets=tickets, registry=registry, embedder=embedder, seed=seed,
                           source=f"demo simulator (seed {seed})")


def load_help_centre(*, session: Session, index: KnowledgeIndex) -> tuple[int, int]:
    """Publish the simulator's help-centre articles not in the knowledge hub yet (matched by title) and index them;
    returns (imported, already there). The planted knowledge gap has no article on purpose."""
    from insight.simulate.knowledge import knowledge_base
    from knowledge_hub.models import ArticleCreate, ArticleStatus
    from knowledge_hub.service import bulk_create, list_articles

    existing = {a.title for a in list_articles(session=session)}
    new = [(ArticleCreate(title=a.title, body=a.body, tags=list(a.tags), intents=list(a.intents),
                          activities=list(a.activities), status=ArticleStatus.published), ARTICLE_AUTHOR)
           for a in knowledge_base() if a.title not in existing]
    if new:
        bulk_create(session=session, index=index, articles_in=new)
    return len(new), len(existing)
