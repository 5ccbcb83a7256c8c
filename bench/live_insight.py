"""Live insight: refreshing the insights of a store of 100,000 events, incrementally and from scratch.

Run: `nice -n 5 .venv/bin/python bench/live_insight.py` (no args). Writes bench/results/live_insight.json.

A simulated log of about 100,000 events (insight.simulate) is written into a fresh SQLite store the way the service
keeps it (ticket and ticket_event rows). Timed, with the same repeats on each side:

- **incremental refresh** (api.live_insight.LiveInsight.refresh after 1,000 new events): reads only the new event
  rows, re-reads ticket attributes, mines the whole live log and writes the report;
- **from scratch**: a new reader on the same store (reads every event), the baseline an implementation without
  the incremental reader would pay on every refresh.

Goal (issue 17): a refresh of 100,000 stored events in < 5 s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

try:
    from bench._common import Results, best_of_interleaved
except ImportError:  # run as a script
    from _common import Results, best_of_interleaved  # type: ignore[no-redef]

N_EVENTS = int(os.environ.get("DESKPILOT_BENCH_EVENTS", "100000"))
REPEAT = 3


def _fill(engine: Any, log: Any, *, rows: slice) -> int:
    """Insert the tickets and events of the log's rows `rows` (tickets once) as the service stores them."""
    from sqlalchemy import insert

    from routing.models import Ticket, TicketEvent, utcnow

    df = log.df.iloc[rows]
    now = utcnow()
    with engine.begin() as conn:
        have = {r[0] for r in conn.execute(Ticket.__table__.select().with_only_columns(  # type: ignore[attr-defined]
            Ticket.__table__.c.ticket_id))}  # type: ignore[attr-defined]
        new_ids = [c for c in df["case_id"].astype(str).unique() if c not in have]
        if new_ids:
            conn.execute(insert(Ticket.__table__), [  # type: ignore[attr-defined]
                {"ticket_id": c, "subject": "", "body": "", "custom_fields": {}, "payload_hash": "x",
                 "received_at": now, "updated_at": now} for c in new_ids])
        conn.execute(insert(TicketEvent.__table__), [  # type: ignore[attr-defined]
            {"case_id": str(r.case_id), "activity": str(r.activity), "timestamp": r.timestamp.to_pydatetime(),
             "resource": None if r.resource is None else str(r.resource),
             "group": None if r.group is None else str(r.group), "payload": {}, "retriaged": False,
             "received_at": now}
            for r in df[["case_id", "activity", "timestamp", "resource", "group"]].itertuples(index=False)])
    return len(df)


def main() -> None:
    from sqlmodel import SQLModel

    from api.app import _import_tables, make_engine
    from api.live_insight import LiveInsight
    from api.settings import Settings
    from insight.simulate import simulate_events

    res = Results("live_insight")
    log = simulate_events(n_events=N_EVENTS, seed=11).log
    log.df["resource"] = log.df["resource"].astype(object).where(log.df["resource"].notna(), None)
    log.df["group"] = log.df["group"].astype(object).where(log.df["group"].notna(), None)
    home = Path(tempfile.mkdtemp(prefix="deskpilot-live-"))
    settings = Settings(home=home, live_insight_seconds=0, webhooks_enabled=False)
    engine = make_engine(settings.db_url)
    _import_tables()
    SQLModel.metadata.create_all(engine)
    head = len(log.df) - 1000
    stored = _fill(engine, log, rows=slice(0, head))
    live = LiveInsight(engine, settings)
    live.refresh(force=True)  # warm: the first read of the whole store
    cursor = [head]

    def incremental() -> Any:
        lo = cursor[0] if cursor[0] < len(log.df) else head
        # each round adds up to 1,000 events (the tail of the log, then the same events again under new ids)
        _fill(engine, log, rows=slice(lo, lo + 1000))
        cursor[0] = lo + 1000
        return live.refresh()

    def scratch() -> Any:
        return LiveInsight(engine, settings).refresh(force=True)

    best = best_of_interleaved({"incremental": incremental, "scratch": scratch}, repeat=REPEAT)
    inc_s, inc = best["incremental"]
    full_s, full = best["scratch"]
    data = f"simulated, {stored + 1000 * REPEAT:,} events stored"
    res.add("live refresh", data, "incremental refresh (s)", inc_s, full_s, "< 5")
    res.add("live refresh", data, "of which read (s)", inc.read_seconds, full.read_seconds)
    res.add("live refresh", data, "of which mine (s)", inc.mine_seconds, full.mine_seconds)
    res.add("live refresh", data, "cases mined", inc.cases, full.cases)
    res.add("live refresh", data, "speed-up over from scratch (x)", full_s / inc_s if inc_s else None)
    res.extra_env["repeat"] = REPEAT
    res.write()


if __name__ == "__main__":
    main()
