"""Live insight: the service mines its own event store, on a schedule and on demand, with the same miners.

`LiveInsight.refresh()` reads the events stored since the last refresh (routing.dataset.LiveLogReader keeps the
rest), joins them with the mined history when one is configured (`retrain_history_log`, the same log retraining
learns from), runs `insight.mining.mine` and writes the report to `<home>/insights/live.json`. Alerts graded
medium or high are stored once each (api.webhooks.publish_alerts), which announces them to `alert` subscribers.
A fresh home answers an empty report, not an error.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from routing.models import utcnow

log = structlog.get_logger(__name__)


@dataclass
class RefreshResult:
    """What one refresh did."""

    events: int
    new_events: int
    cases: int
    alerts_published: int
    seconds: float
    read_seconds: float
    mine_seconds: float
    refreshed_at: str
    skipped: bool = False
    history_cases: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def empty_report() -> dict[str, Any]:
    """The live report of a store with no events yet."""
    return {"name": "live event store", "n_cases": 0, "n_events": 0, "n_activities": 0, "headlines": [],
            "live": {"events": 0, "refreshed_at": None, "note": "no events stored yet: nothing to mine"}}


class LiveInsight:
    """The live report of one service process, refreshed incrementally (thread-safe)."""

    def __init__(self, engine: Engine, settings: Any) -> None:
        from routing.dataset import LiveLogReader

        self.engine = engine
        self.settings = settings
        key = settings.pseudonym_key.get_secret_value() or None
        self.reader = LiveLogReader(pseudonym_key=key)
        self.path = Path(settings.home) / "insights" / "live.json"
        self._lock = threading.Lock()
        self._history: Any = None
        self._history_loaded = False
        self.last: RefreshResult | None = None

    def _history_log(self) -> Any:
        if not self._history_loaded:
            self._history_loaded = True
            path = self.settings.retrain_history_log
            if path is not None and Path(path).is_file():
                from insight.eventlog import read_log

                self._history = read_log(path)
        return self._history

    def report(self) -> dict[str, Any]:
        """The latest live report (empty on a fresh home)."""
        if not self.path.is_file():
            return empty_report()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError:
            return empty_report()
        return data if isinstance(data, dict) else empty_report()

    def refresh(self, *, force: bool = False) -> RefreshResult:
        """Read what is new, mine the whole live log (plus history) and write the report; skipped when nothing
        changed unless `force`."""
        with self._lock:
            t0 = time.perf_counter()
            with Session(self.engine) as session:
                live, new = self.reader.read(session)
            read_s = time.perf_counter() - t0
            now = utcnow().isoformat()
            if not force and new == 0 and self.last is not None:
                self.last = RefreshResult(self.reader.n_events, 0, self.last.cases, 0,
                                          round(time.perf_counter() - t0, 3), round(read_s, 3), 0.0, now, skipped=True)
                return self.last
            history = self._history_log()
            log_ = live
            hist_cases = 0
            if history is not None:
                from insight.eventlog import EventLog, clean

                live_ids = set(live.df["case_id"]) if live is not None else set()
                hist = history.df[~history.df["case_id"].astype(str).isin(live_ids)]
                hist_cases = int(hist["case_id"].nunique())
                frames = [hist] + ([live.df] if live is not None else [])
                log_ = clean(EventLog(pd.concat(frames, ignore_index=True), name="history + live log"))
            t1 = time.perf_counter()
            if log_ is None or log_.n_events == 0:
                report = empty_report()
                alerts_new, cases = 0, 0
            else:
                from insight.mining import mine
                from insight.mining.report import MineConfig

                rep = mine(log_, config=MineConfig(render_map=False))
                report = rep.to_dict()
                cases = rep.n_cases
                alerts_new = self._publish(rep)
            mine_s = time.perf_counter() - t1
            result = RefreshResult(self.reader.n_events, new, cases, alerts_new, round(time.perf_counter() - t0, 3),
                                   round(read_s, 3), round(mine_s, 3), now, history_cases=hist_cases,
                                   timings=dict(report.get("timings_s") or {}))
            report["live"] = {**asdict(result), "timings": None}
            self._write(report)
            self.last = result
            log.info("live_insight_refreshed", events=result.events, new=new, cases=cases, seconds=result.seconds,
                     alerts=alerts_new)
            return result

    def _publish(self, rep: Any) -> int:
        from api.webhooks import publish_alerts

        try:
            with Session(self.engine) as session:
                return publish_alerts(session=session, alerts=rep.alerts.alerts, window_end=rep.alerts.recent_end)
        except Exception as exc:  # the report is still worth writing; the alerts are retried next refresh
            log.warning("live_alerts_not_published", error=f"{type(exc).__name__}: {str(exc)[:300]}")
            return 0

    def _write(self, report: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".live-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(report, fh, ensure_ascii=False, default=str)
        os.replace(tmp, self.path)  # readers see the old report or the new one, never half of one


class LiveScheduler:
    """Refresh the live report every `seconds` in a background thread (skipped when nothing new was stored)."""

    def __init__(self, live: LiveInsight, seconds: float) -> None:
        self.live = live
        self.seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deskpilot-live-insight", daemon=True)

    def start(self) -> LiveScheduler:
        """Start the thread."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.live.refresh()
            except Exception as exc:  # keep the schedule; the next round tries again
                log.warning("live_insight_failed", error=f"{type(exc).__name__}: {str(exc)[:300]}")

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=5)
