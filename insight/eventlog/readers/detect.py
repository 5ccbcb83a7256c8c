"""Which reader a file needs (CSV, XES or Parquet) from its first bytes, and which source layout it holds
(Disco, OpenXES, ServiceNow, Zendesk / Freshdesk export ...) from its columns."""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from core.errors import InvalidEventLog
from insight.eventlog.cleaning import factorize_strings
from insight.eventlog.schema import ACTIVITY, CASE_ID, GROUP, LIFECYCLE, RESOURCE, TIMESTAMP, EventLog

LogFormat = Literal["csv", "xes", "parquet"]

_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (unzip it first)",
}


def detect_format(path: Path) -> LogFormat:
    """csv / xes / parquet from the file's first bytes (and its name as a tie-breaker); rejects other files."""
    if not path.is_file():
        raise InvalidEventLog("file does not exist", file=str(path))
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        raise InvalidEventLog("file is empty: an event log needs a header and at least one event", file=str(path))
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            try:
                head = gz.read(4096)
            except (OSError, EOFError) as exc:
                raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise InvalidEventLog(f"not an event log: the file is {what}", file=str(path))
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"<?xml", b"<log")):
        if b"<log" in head or b"xes" in head.lower():
            return "xes"
        raise InvalidEventLog("XML file that is not an XES event log (no <log> element)", file=str(path))
    if text.startswith((b"{", b"[")):
        raise InvalidEventLog(
            "not an event log: the file is JSON; deskpilot reads CSV, XES or Parquet logs", file=str(path)
        )
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidEventLog("not an event log: binary content (NUL bytes) in a file expected to be CSV",
                              file=str(path))
    return "csv"


# ---------------------------------------------------------------------------------------------------------------
# What kind of source a log is, from its columns, and what reading it needs (preset, team column, label pitfalls).

# lifecycle:transition values of the XES standard lifecycle model; anything else is a source's own sub-status
STANDARD_TRANSITIONS = frozenset({
    "schedule", "assign", "reassign", "start", "suspend", "resume", "complete", "autoskip", "manualskip",
    "withdraw", "ate_abort", "pi_abort", "abort",
})
# activity labels that stand for "no value" (negative codes, "?", "N/A" ...): a source's filler, not a step
_PLACEHOLDER = re.compile(r"^\s*(?:-\d+|\?+|-+|n/?a|null|none|nan|unknown|undefined|tbd|#n/?a)\s*$", re.IGNORECASE)
# columns that name the team / queue a case sits with, best first (compared with columns.norm_name)
TEAM_NAMES = (
    "group", "team", "queue", "assignmentgroup", "orggroup", "workgroup", "supportgroup", "resolvergroup",
    "involvedst", "supportteam", "department", "supportsection", "responsiblesection", "section",
)


@dataclass
class SourceGuess:
    """What a log looks like it came from, the preset that reads it and why we think so."""

    kind: str
    preset: str | None
    reason: str

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return {"kind": self.kind, "preset": self.preset, "reason": self.reason}


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def detect_source(columns: list[str], *, fmt: str = "csv", lifecycle_values: list[str] | None = None,
                  trace_attributes: list[str] | None = None, creator: str | None = None) -> SourceGuess:
    """The source layout (Disco export, OpenXES with lifecycle, ServiceNow, Zendesk / Freshdesk export, ...) from
    its column names (and, for XES, its lifecycle values), with the preset that reads it."""
    cols = {_norm(c) for c in columns} | {_norm(c) for c in trace_attributes or ()}
    life = {str(v).strip().lower() for v in lifecycle_values or ()}
    if {"number", "incidentstate", "sysupdatedat"} <= cols:
        return SourceGuess("servicenow", "servicenow", "columns number, incident_state, sys_updated_at")
    if {"srnumber", "substatus"} <= cols:
        return SourceGuess("bpic2013_vinst_csv", "bpic2013_vinst", "columns SR Number, Status, Sub Status")
    if {"caseid", "activityid", "completetimestamp"} <= cols:
        return SourceGuess("tax2017_csv", "tax2017", "columns CaseID, ActivityID, CompleteTimestamp")
    if "via" in cols and ({"requester", "requesterid"} & cols) and ({"solvedat", "groupstations", "satisfactionscore",
                                                                   "assigneestations", "reopens"} & cols):
        return SourceGuess("zendesk_export", "zendesk_export",
                           "Zendesk ticket export columns (Via, Requester, Solved at / stations / Satisfaction)")
    if ({"ticketid"} & cols) and ({"agentinteractions", "customerinteractions", "firstresponsestatus",
                                   "resolutionstatus", "duebytime", "lastupdatetime"} & cols):
        return SourceGuess("freshdesk_export", "freshdesk_export",
                           "Freshdesk ticket export columns (Ticket ID, Agent/Customer interactions, Due by Time)")
    if fmt == "xes":
        sub = sorted(life - STANDARD_TRANSITIONS)
        if sub:
            return SourceGuess(
                "openxes_substatus_lifecycle", "bpic2013_xes",
                f"lifecycle:transition holds the source's own sub-statuses ({', '.join(sub[:4])}), "
                "not XES transitions: join them onto the activity",
            )
        disco = "disco" in (creator or "").lower() or bool({"variant", "variantindex"} & cols)
        if disco and life <= {"complete"}:
            return SourceGuess("disco_xes", None, "Disco XES export (creator Fluxicon Disco or variant trace "
                                                  "attributes, lifecycle all 'complete'): read as is")
        if {"start", "complete"} <= life:
            return SourceGuess("openxes_lifecycle", None, "OpenXES with start/complete lifecycle pairs: read as is")
        return SourceGuess("xes", None, "XES with standard names")
    if {"caseid", "activity", "completetimestamp"} <= cols:
        return SourceGuess("disco_csv", "helpdesk_csv",
                           "Disco CSV export (Case ID, Activity, Complete Timestamp[, Variant])")
    return SourceGuess("unknown", None, "no known layout recognised from the columns")


def is_placeholder_activity(label: str) -> bool:
    """True for labels that stand for a missing value ("-100", "?", "N/A", "-") rather than a step."""
    return bool(_PLACEHOLDER.match(str(label)))


def team_candidates(df: pd.DataFrame, *, exclude: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """Columns that look like a team / queue (by name, 2..1000 distinct values), best first, with value counts."""
    out: list[tuple[int, str, int]] = []
    for col in df.columns:
        if col in exclude:
            continue
        n = _norm(col)
        exact = next((i for i, name in enumerate(TEAM_NAMES) if n == name), None)
        prefix = next((i for i, name in enumerate(TEAM_NAMES) if len(name) > 5 and n.startswith(name)), None)
        rank = exact if exact is not None else (None if prefix is None else len(TEAM_NAMES) + prefix)
        if rank is None:
            continue
        k = int(df[col].nunique(dropna=True))
        if 2 <= k <= 1000:
            out.append((rank, str(col), k))
    return [(c, k) for _, c, k in sorted(out)]


def source_columns(path: Path, fmt: str) -> list[str]:
    """The file's own column names (CSV header, Parquet schema); [] for XES, whose names pm4py fixes."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return [str(n) for n in pq.read_schema(path).names]
    if fmt != "csv":
        return []
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as fh:  # type: ignore[operator]
        line = fh.readline()
    delim = max(",;\t|", key=line.count)
    return [c.strip().strip('"') for c in next(csv.reader([line], delimiter=delim), [])]


def review_source(log: EventLog, *, path: Path, fmt: str, preset: str | None) -> SourceGuess:
    """Record in the quality report what the source looks like, the preset and team column it needs, label
    rewrites a preset made (or missed) and placeholder activities; returns the guess."""
    from insight.eventlog.readers.presets import PRESETS

    report = log.quality
    df = log.df
    life = (df[LIFECYCLE].dropna().astype(str).unique().tolist()[:200]
            if LIFECYCLE in df.columns else [])
    cols = source_columns(path, fmt) or [str(c) for c in df.columns]
    creator = str(df["creator"].iloc[0]) if "creator" in df.columns and len(df) else None
    guess = detect_source(cols, fmt=fmt, lifecycle_values=life, trace_attributes=list(log.case_attributes),
                          creator=creator)
    if report is None:
        return guess
    report.source_kind = guess.kind
    report.add("source_detected", 0, f"{guess.kind}: {guess.reason}")
    if guess.preset and preset is None:
        report.suggestions["preset"] = guess.preset
        if guess.kind != "openxes_substatus_lifecycle":  # _review_lifecycle says it with the figures
            what = PRESETS[guess.preset].description if guess.preset in PRESETS else ""
            report.notices.append(f"the columns look like the {guess.kind} layout ({guess.reason}): "
                                  f"read it with --preset {guess.preset}" + (f" ({what})" if what else ""))
    elif guess.preset and preset not in (None, guess.preset):
        report.notices.append(f"preset {preset} was given but the columns look like the {guess.kind} layout: "
                              f"--preset {guess.preset} may fit better")
    _review_lifecycle(log, life, PRESETS.get(preset) if preset else None, preset)
    if GROUP not in df.columns or not df[GROUP].notna().any():
        cands = team_candidates(df, exclude=(CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, LIFECYCLE))
        if cands:
            best, k = cands[0]
            report.suggestions["team_column"] = best
            others = "".join(f", {c!r} ({n})" for c, n in cands[1:4])
            report.notices.append(
                f"no team column mapped, but {best!r} ({k} values) looks like one{' (others: ' + others[2:] + ')' if others else ''}: "
                f"pass --map '{best}=group' to analyse routing and transfers by team"
            )
    if df[ACTIVITY].dtype == "str" and not any(map(is_placeholder_activity, factorize_strings(df[ACTIVITY])[1])):
        return guess  # no placeholder among the distinct labels (hashed once, for the cleaner too)
    acts = df[ACTIVITY].astype(str).value_counts()
    junk = [a for a in acts.index if is_placeholder_activity(a)]
    if junk and len(junk) < len(acts):
        rows = int(acts[junk].sum())
        cases = int(df.loc[df[ACTIVITY].astype(str).isin(junk), CASE_ID].nunique())
        names = ", ".join(repr(a) for a in junk[:5])
        report.add("placeholder_activity", rows, f"activities {names} stand for a missing value ({cases} cases)")
        report.notices.append(f"placeholder activit{'y' if len(junk) == 1 else 'ies'} {names} in {rows} events "
                              f"({cases} cases): a source's filler for a missing status, not a step; "
                              "filter or map it before reading its paths")
    return guess


def _review_lifecycle(log: EventLog, life: list[str], pre: Any, preset: str | None) -> None:
    """Warn when a preset joined standard transitions onto activities, or when sub-statuses were left out."""
    report = log.quality
    assert report is not None
    lower = {v.strip().lower() for v in life}
    joins = bool(pre is not None and LIFECYCLE in getattr(pre, "activity_from", ()))
    if not life:
        return
    if joins and lower <= STANDARD_TRANSITIONS:
        report.notices.append(
            f"preset {preset} appended the lifecycle transition to every activity (e.g. "
            f"'{str(log.df[ACTIVITY].iloc[0])}'), but this source's lifecycle holds only standard XES transitions "
            f"({', '.join(sorted(lower))}), not sub-statuses: read it without the preset"
        )
        report.warnings.append(f"preset {preset} rewrote activity labels with lifecycle transitions")
        return
    sub = sorted(lower - STANDARD_TRANSITIONS)
    if sub and not joins:
        acts = log.df[ACTIVITY].astype(str)
        lc = log.df[LIFECYCLE].astype(str)
        carried = bool(pd.Series([a.endswith(b) for a, b in zip(acts.head(2000), lc.head(2000), strict=True)]).mean()
                       > 0.5)
        if not carried:
            report.notices.append(
                f"lifecycle holds {len(sub)} sub-statuses ({', '.join(sub[:4])}) that the activities leave out "
                f"({acts.nunique()} activities): join them with --preset bpic2013_xes (activity = "
                "concept:name-lifecycle:transition) or the paths lose them"
            )
