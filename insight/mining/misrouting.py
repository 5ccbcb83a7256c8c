"""Misrouting from the team column: reassignments, ping-pong, push-to-front, channel transfers, and their cost.

Definitions (all on the team sequence of a case up to its resolving event; see insight.mining.labels):

* **reassigned**: the team changed at least once; **misrouted**: first team != resolving team, or reassigned.
* **ping-pong**: a team comes back after another team had the case (A .. B .. A). The pair is A and the team that
  took the case right after A's first spell.
* **push-to-front** (needs support lines, from a mapping or the 2nd/3rd, L2/L3 name suffix): a case that started
  in the first line and reached the 2nd/3rd line. It *could have stayed* at the first line when the higher line
  did not really solve it: it was resolved back in the first line, or nobody there did real work on it before
  it was resolved (no activity matching `work_pattern`, e.g. "Work started" / "In Progress"; or only activities
  matching `trivial_pattern`).
* **wrong first team**: misrouted and resolved by a team other than the first one (a ping-pong that ends where
  it started is misrouted but its first team was right).
* **what kind of transfer** (`transfer_kind`, one per reassigned case, first match wins):
  ``bounced_by_reopen`` (the team changed after the customer reopened the case), ``ping_pong``, ``push_to_front``
  (pushed to a higher line that did not really solve it), ``justified_escalation`` (an escalate step, or moving up
  a support line in logs that have no escalate steps, to a team that resolved it), ``misroute`` (the first team did not resolve it and nothing above
  explains why), ``other_transfer`` (reassigned but resolved by its first team). Misroutes, ping-pong and
  push-to-front are *avoidable*: headlines lead with them and the hours they cost.
* **avoidable** (per case, and per first team as `avoidable_out`): the case's transfer kind is one routing could
  have avoided. This, not `misrouted` (the label the misroute model trains on, which counts every transfer when a
  log has no escalate steps), is what reports, the web findings and the misrouting alert lead with.
* **extra time** of a misrouted case: its throughput time minus the median throughput of cases of the same kind
  (the first of `kind_columns` the log has, e.g. intent / category / product) that were routed right first time;
  kinds with fewer than `min_baseline_cases` such cases fall back to the same resolving team, then to all
  right-first-time cases. With a `finished` mask, unfinished cases get no extra time and are not in any baseline
  (their durations are only lower bounds); `duration_basis` says so.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from insight.eventlog.schema import CASE_ID, CHANNEL, GROUP, EventLog
from insight.mining._core import EncodedLog, encode
from insight.mining.labels import CaseLabels, LabelConfig, case_labels


@dataclass
class MisroutingConfig:
    """Knobs of the misrouting analysis."""

    labels: LabelConfig = field(default_factory=LabelConfig)
    kind_columns: tuple[str, ...] = ("intent", "category", "product", "subcategory")
    min_baseline_cases: int = 5
    # Higher-line events matching this count as real work; a pushed case with none could have stayed.
    work_pattern: str | None = r"work|in progress|investigat|diagnos|fix|implement"
    trivial_pattern: str | None = None
    top_n: int = 15
    max_example_cases: int = 20


@dataclass
class TeamMisrouting:
    """Per team: how often cases it received first left it, ping-pong involvement and the time that cost."""

    team: str
    line: int | None
    first_team_cases: int
    misrouted_out: int
    misrouted_out_share: float
    reassigned_in: int
    resolved_cases: int
    ping_pong_cases: int
    pushed_cases: int
    extra_hours_mean: float | None
    extra_hours_total: float
    # Of the cases it received first, those whose transfer routing could have avoided, and their extra hours
    # against similar cases that stayed with their first team.
    avoidable_out: int = 0
    avoidable_out_share: float = 0.0
    avoidable_hours: float = 0.0


@dataclass
class TeamPairMisrouting:
    """Per (first team, resolving team) pair of misrouted cases, plus direct transfers between the two."""

    from_team: str
    to_team: str
    cases: int
    transfers: int
    ping_pong_cases: int
    extra_hours_mean: float | None
    extra_hours_median: float | None
    extra_hours_total: float
    example_cases: list[str] = field(default_factory=list)
    # Of `cases`, those whose transfer routing could have avoided (the others are escalations and the like).
    avoidable_cases: int = 0


@dataclass
class PingPongPair:
    """A pair of teams bouncing cases (A .. B .. A), unordered."""

    team_a: str
    team_b: str
    cases: int
    example_cases: list[str] = field(default_factory=list)


@dataclass
class PushToFront:
    """Cases leaving the first line for 2nd/3rd line, and those that could have stayed."""

    first_line_cases: int
    pushed_cases: int
    pushed_share: float
    could_have_stayed: int
    could_have_stayed_share: float
    resolved_back_in_first_line: int
    trivial_higher_line_work: int
    by_line: dict[str, int] = field(default_factory=dict)
    example_cases: list[str] = field(default_factory=list)


TRANSFER_KINDS: dict[str, tuple[bool, str]] = {
    # kind: (avoidable, what it means)
    "misroute": (True, "first team did not resolve it and nothing explains the move"),
    "ping_pong": (True, "bounced back to a team that had it before"),
    "push_to_front": (True, "pushed to a higher line that did not really solve it"),
    "justified_escalation": (False, "escalated to a higher line that resolved it"),
    "bounced_by_reopen": (False, "moved teams after the customer reopened it"),
    "other_transfer": (False, "reassigned, but resolved by the team that first had it"),
}


@dataclass
class TransferKind:
    """Reassigned cases of one kind, whether routing could have avoided them, and what they cost in time.

    `extra_hours_*` compare each case with similar cases (same kind, else same resolving team) that never changed
    team; a negative figure means these cases were faster than those.
    """

    kind: str
    avoidable: bool
    meaning: str
    cases: int
    share_of_cases: float
    extra_hours_total: float
    extra_hours_mean: float | None
    example_cases: list[str] = field(default_factory=list)


@dataclass
class ChannelTransfer:
    """Cases moving from one channel to another."""

    from_channel: str
    to_channel: str
    transfers: int
    cases: int


@dataclass
class MisroutingResult:
    """Everything the misrouting analysis found; `cases` holds one row per case."""

    n_cases: int
    has_groups: bool
    kind_column: str | None
    reassigned_cases: int
    reassigned_share: float
    misrouted_cases: int
    misrouted_share: float
    wrong_first_team_cases: int
    wrong_first_team_share: float
    ping_pong_cases: int
    ping_pong_share: float
    extra_hours_mean: float | None
    extra_hours_total: float
    teams: list[TeamMisrouting]
    pairs: list[TeamPairMisrouting]
    ping_pong_pairs: list[PingPongPair]
    push_to_front: PushToFront | None
    channel_transfers: list[ChannelTransfer]
    cases: pd.DataFrame
    labels: CaseLabels | None = None
    taxonomy: list[TransferKind] = field(default_factory=list)
    # Which cases the extra hours are measured on (all cases, or the finished ones).
    duration_basis: str = "all cases"
    # The first team whose avoidable transfers cost the most hours (then the most cases), among all teams.
    worst_first_team: TeamMisrouting | None = None

    @property
    def avoidable(self) -> list[TransferKind]:
        """The kinds routing could have avoided, with cases."""
        return [t for t in self.taxonomy if t.avoidable and t.cases]

    @property
    def avoidable_cases(self) -> int:
        """Reassigned cases routing could have avoided (misroutes, ping-pong, needless push-to-front)."""
        return sum(t.cases for t in self.avoidable)

    @property
    def avoidable_share(self) -> float:
        """Share of all cases whose transfer routing could have avoided."""
        return self.avoidable_cases / self.n_cases if self.n_cases else 0.0

    @property
    def avoidable_hours(self) -> float:
        """Extra case-hours of the avoidable transfers (negative: faster than cases that stayed)."""
        return float(sum(t.extra_hours_total for t in self.avoidable))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the per-case table is left out; top lists only)."""
        return {
            "n_cases": self.n_cases,
            "has_groups": self.has_groups,
            "kind_column": self.kind_column,
            "reassigned_cases": self.reassigned_cases,
            "reassigned_share": _r(self.reassigned_share),
            "misrouted_cases": self.misrouted_cases,
            "misrouted_share": _r(self.misrouted_share),
            "wrong_first_team_cases": self.wrong_first_team_cases,
            "wrong_first_team_share": _r(self.wrong_first_team_share),
            "ping_pong_cases": self.ping_pong_cases,
            "ping_pong_share": _r(self.ping_pong_share),
            "extra_hours_mean": _r(self.extra_hours_mean),
            "extra_hours_total": _r(self.extra_hours_total),
            "teams": [_clean(asdict(t)) for t in self.teams],
            "pairs": [_clean(asdict(p)) for p in self.pairs],
            "ping_pong_pairs": [asdict(p) for p in self.ping_pong_pairs],
            "push_to_front": _clean(asdict(self.push_to_front)) if self.push_to_front else None,
            "channel_transfers": [asdict(c) for c in self.channel_transfers],
            "taxonomy": [_clean(asdict(t)) for t in self.taxonomy],
            "avoidable_cases": self.avoidable_cases,
            "avoidable_share": _r(self.avoidable_share),
            "avoidable_hours": _r(self.avoidable_hours),
            "duration_basis": self.duration_basis,
            "worst_first_team": _clean(asdict(self.worst_first_team)) if self.worst_first_team else None,
        }


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), nd)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in d.items()}


def _hours(x: Any) -> float | None:
    v = float(x)
    return None if np.isnan(v) else v / 3600.0


def _kind_column(log: EventLog, cfg: MisroutingConfig) -> str | None:
    # Source logs keep their own capitalisation ("Product" in BPIC 2013), so match names case-insensitively.
    by_lower = {str(c).lower(): str(c) for c in log.df.columns}
    for col in cfg.kind_columns:
        real = by_lower.get(col.lower())
        if real is not None and log.has(real):
            return real
    return None


def _extra_seconds(
    cases: pd.DataFrame, kind: pd.Series | None, cfg: MisroutingConfig, *, baseline: np.ndarray | None = None,
    finished: np.ndarray | None = None,
) -> np.ndarray:
    """Throughput minus the median of right-first-time cases of the same kind (fallbacks in module doc).

    `baseline` replaces "right first time" (not misrouted) by another mask of reference cases; unfinished cases
    (`finished` False) are no reference and get no extra time.
    """
    rft = (cases["misrouted"].fillna(True).to_numpy() == False) if baseline is None else baseline  # noqa: E712
    if finished is not None:
        rft = rft & finished
    thr = cases["throughput_s"].to_numpy(dtype=float)
    base = np.full(len(cases), np.nan)
    global_med = float(np.median(thr[rft])) if rft.any() else np.nan
    keys: list[pd.Series] = []
    if kind is not None:
        keys.append(kind.astype("string"))
    keys.append(cases["resolving_team"].astype("string"))
    for key in keys:
        frame = pd.DataFrame({"k": key.to_numpy(), "t": thr, "rft": rft})
        stats = frame[frame["rft"]].groupby("k", dropna=True)["t"].agg(["median", "size"])
        stats = stats[stats["size"] >= cfg.min_baseline_cases]
        med = frame["k"].map(stats["median"]).to_numpy(dtype=float)
        fill = np.isnan(base) & ~np.isnan(med)
        base[fill] = med[fill]
    base[np.isnan(base)] = global_med
    extra = thr - base
    extra[rft] = np.nan
    if finished is not None:
        extra[~finished] = np.nan
    return extra


def _ping_pong(seg: pd.DataFrame) -> pd.DataFrame:
    """Per ping-pong case: the case code and the pair (A, the team after A's first spell)."""
    if seg.empty:
        return pd.DataFrame(columns=["case", "team_a", "team_b"])
    s = seg.reset_index(drop=True)
    idx = pd.Series(np.arange(len(s)))
    first_idx = idx.groupby([s["case"], s["team"]]).transform("min").to_numpy()
    dup = np.flatnonzero(idx.to_numpy() != first_idx)
    if not len(dup):
        return pd.DataFrame(columns=["case", "team_a", "team_b"])
    d = pd.DataFrame({"case": s["case"].to_numpy()[dup], "row": dup}).drop_duplicates("case")
    first_of = first_idx[d["row"].to_numpy()]
    return pd.DataFrame(
        {
            "case": d["case"].to_numpy(),
            "team_a": s["team"].to_numpy()[first_of],
            "team_b": s["team"].to_numpy()[first_of + 1],
        }
    )


def analyze_misrouting(
    log: EventLog,
    *,
    config: MisroutingConfig | None = None,
    labels: CaseLabels | None = None,
    enc: EncodedLog | None = None,
    finished: np.ndarray | None = None,
) -> MisroutingResult:
    """Reassignments, ping-pong, push-to-front and channel transfers per case, team and team pair.

    `finished` (one flag per case, in encoded order) measures extra time on finished cases only.
    """
    cfg = config or MisroutingConfig()
    enc = enc if enc is not None else encode(log)
    cl = labels if labels is not None else case_labels(log, config=cfg.labels, enc=enc)
    cases = cl.df.copy()
    n = len(cases)
    fin = None if finished is None else np.asarray(finished, dtype=bool)
    if fin is not None and len(fin) != n:
        raise InvalidInput("finished mask must have one entry per case", field="finished")
    n_open = 0 if fin is None else int((~fin).sum())
    basis = "all cases" if not n_open else (
        f"{n - n_open:,} finished cases ({n_open:,} unfinished cases counted by kind but not timed: their "
        "durations are only lower bounds)")
    kind_col = _kind_column(log, cfg)
    channel_transfers = _channel_transfers(log, cfg)
    if not cl.has_groups or cl.segments is None or n == 0:
        return MisroutingResult(
            n_cases=n, has_groups=False, kind_column=kind_col, reassigned_cases=0, reassigned_share=0.0,
            misrouted_cases=0, misrouted_share=0.0, wrong_first_team_cases=0, wrong_first_team_share=0.0,
            ping_pong_cases=0, ping_pong_share=0.0,
            extra_hours_mean=None, extra_hours_total=0.0, teams=[], pairs=[], ping_pong_pairs=[],
            push_to_front=None, channel_transfers=channel_transfers, cases=cases, labels=cl, duration_basis=basis,
        )
    seg = cl.segments
    counted = seg[seg["counted"]]
    kind = None
    if kind_col is not None:
        kind = log.df.groupby(CASE_ID, sort=False, observed=True)[kind_col].first().reindex(cases.index)
        cases["kind"] = kind.to_numpy()
    misrouted = cases["misrouted"].fillna(False).to_numpy(dtype=bool)
    reassigned = cases["reassignments"].to_numpy() > 0
    extra = _extra_seconds(cases, kind, cfg, finished=fin)
    cases["extra_s"] = extra

    pp = _ping_pong(counted)
    ping = np.zeros(n, dtype=bool)
    ping[pp["case"].to_numpy(dtype=np.int64)] = True
    cases["ping_pong"] = ping
    pair_a = np.full(n, None, dtype=object)
    pair_b = np.full(n, None, dtype=object)
    pair_a[pp["case"].to_numpy(dtype=np.int64)] = pp["team_a"].to_numpy()
    pair_b[pp["case"].to_numpy(dtype=np.int64)] = pp["team_b"].to_numpy()
    cases["ping_pong_a"] = pair_a
    cases["ping_pong_b"] = pair_b

    push = _push_to_front(log, cl, counted, cases, cfg, enc)
    ids = cases.index.to_numpy()

    first = cases["first_team"].astype("string")
    resolving = cases["resolving_team"].astype("string")
    wrong_first = misrouted & (first.fillna("").to_numpy(dtype=object) != resolving.fillna("").to_numpy(dtype=object))
    cases["wrong_first_team"] = wrong_first
    # Each kind is costed against cases that never changed team (escalations are not a norm to compare with).
    extra_vs_stayed = _extra_seconds(cases, kind, cfg, baseline=~reassigned, finished=fin)
    taxonomy = _taxonomy(cases, cl, seg, enc, reassigned, wrong_first, extra_vs_stayed, cfg)
    avoidable_kinds = [k for k, (av, _) in TRANSFER_KINDS.items() if av]
    avoid = pd.Series(cases["transfer_kind"]).isin(avoidable_kinds).to_numpy(dtype=bool)
    cases["avoidable"] = avoid

    # Per team.
    teams: list[TeamMisrouting] = []
    in_counts = counted[counted["seq"] > 0]["team"].value_counts()
    pp_long = pd.concat([pp["team_a"], pp["team_b"]]).value_counts() if len(pp) else pd.Series(dtype=int)
    pushed_by_team = (
        first[cases["pushed"].to_numpy(dtype=bool)].value_counts() if "pushed" in cases else pd.Series(dtype=int)
    )
    frame = pd.DataFrame({"first": first.to_numpy(), "mis": misrouted, "extra": extra, "av": avoid,
                          "xav": np.where(avoid, np.nan_to_num(extra_vs_stayed), 0.0)})
    by_first = frame.groupby("first", dropna=True).agg(cases=("mis", "size"), mis=("mis", "sum"),
                                                       av=("av", "sum"), xav=("xav", "sum"))
    extra_by_first = frame[frame["mis"]].groupby("first", dropna=True)["extra"].agg(["mean", "sum"])
    resolved_counts = resolving.value_counts()
    lines = cl.lines or {}
    for team, row in by_first.iterrows():
        t = str(team)
        mean_x = extra_by_first["mean"].get(t, np.nan) if len(extra_by_first) else np.nan
        sum_x = extra_by_first["sum"].get(t, 0.0) if len(extra_by_first) else 0.0
        teams.append(
            TeamMisrouting(
                team=t,
                line=lines.get(t),
                first_team_cases=int(row["cases"]),
                misrouted_out=int(row["mis"]),
                misrouted_out_share=float(row["mis"]) / max(int(row["cases"]), 1),
                reassigned_in=int(in_counts.get(t, 0)),
                resolved_cases=int(resolved_counts.get(t, 0)),
                ping_pong_cases=int(pp_long.get(t, 0)),
                pushed_cases=int(pushed_by_team.get(t, 0)),
                extra_hours_mean=_hours(mean_x),
                extra_hours_total=float(np.nan_to_num(sum_x)) / 3600.0,
                avoidable_out=int(row["av"]),
                avoidable_out_share=float(row["av"]) / max(int(row["cases"]), 1),
                avoidable_hours=float(row["xav"]) / 3600.0,
            )
        )
    worst = max((t for t in teams if t.avoidable_out), key=lambda t: (t.avoidable_hours, t.avoidable_out, t.team),
                default=None)
    teams.sort(key=lambda t: (-t.misrouted_out, -t.extra_hours_total, t.team))

    # Per (first team -> resolving team) pair of misrouted cases, plus direct transfers A -> B.
    nxt = counted["team"].shift(-1)
    same_case = counted["case"].shift(-1) == counted["case"]
    tr = pd.DataFrame({"a": counted["team"].to_numpy(), "b": nxt.to_numpy(), "same": same_case.to_numpy()})
    tr_counts = tr[tr["same"]].groupby(["a", "b"]).size()
    pf = pd.DataFrame(
        {"a": first.to_numpy(), "b": resolving.to_numpy(), "x": extra, "pp": ping, "id": ids, "mis": misrouted,
         "av": avoid}
    )
    pf = pf[pf["mis"] & pf["a"].notna() & pf["b"].notna() & (pf["a"] != pf["b"])]
    pairs: list[TeamPairMisrouting] = []
    if len(pf):
        pf = pf.assign(a=pf["a"].astype(object), b=pf["b"].astype(object), x=pf["x"].astype(float))
        agg = pf.groupby(["a", "b"], sort=False).agg(
            cases=("id", "size"), pp=("pp", "sum"), xmean=("x", "mean"), xmed=("x", "median"), xsum=("x", "sum"),
            av=("av", "sum"),
        )
        agg = agg.reset_index().sort_values(["cases", "xsum", "a", "b"], ascending=[False, False, True, True])
        agg = agg.head(max(cfg.top_n, 0) * 4)
        wanted = set(zip(agg["a"], agg["b"], strict=True))
        ex: dict[tuple[str, str], list[str]] = {}
        for a_, b_, cid in zip(pf["a"].to_numpy(), pf["b"].to_numpy(), pf["id"].to_numpy(), strict=True):
            if (a_, b_) in wanted:
                lst = ex.setdefault((a_, b_), [])
                if len(lst) < cfg.max_example_cases:
                    lst.append(str(cid))
        for r in agg.itertuples(index=False):
            pairs.append(
                TeamPairMisrouting(
                    from_team=str(r.a),
                    to_team=str(r.b),
                    cases=int(r.cases),
                    transfers=int(tr_counts.get((r.a, r.b), 0)),
                    ping_pong_cases=int(r.pp),
                    extra_hours_mean=_hours(r.xmean),
                    extra_hours_median=_hours(r.xmed),
                    extra_hours_total=float(np.nan_to_num(r.xsum)) / 3600.0,
                    example_cases=ex.get((r.a, r.b), []),
                    avoidable_cases=int(r.av),
                )
            )

    pp_pairs: list[PingPongPair] = []
    if len(pp):
        a = np.where(pp["team_a"] <= pp["team_b"], pp["team_a"], pp["team_b"])
        b = np.where(pp["team_a"] <= pp["team_b"], pp["team_b"], pp["team_a"])
        ppf = pd.DataFrame({"a": a, "b": b, "id": ids[pp["case"].to_numpy(dtype=np.int64)]})
        # Examples per pair: ids of the first cases of each pair (one pass, no per-group frames).
        ppf["k"] = ppf.groupby(["a", "b"], sort=False).cumcount()
        ex_rows = ppf[ppf["k"] < cfg.max_example_cases]
        examples = ex_rows.groupby(["a", "b"], sort=False)["id"].agg(list)
        sizes = ppf.groupby(["a", "b"], sort=False).size()
        for (ta, tb), cnt in sizes.items():
            pp_pairs.append(PingPongPair(str(ta), str(tb), int(cnt), [str(c) for c in examples[(ta, tb)]]))
        pp_pairs.sort(key=lambda p: (-p.cases, p.team_a, p.team_b))

    x_mis = extra[misrouted & np.isfinite(extra)]
    return MisroutingResult(
        n_cases=n,
        has_groups=True,
        kind_column=kind_col,
        reassigned_cases=int(reassigned.sum()),
        reassigned_share=float(reassigned.mean()),
        misrouted_cases=int(misrouted.sum()),
        misrouted_share=float(misrouted.mean()),
        wrong_first_team_cases=int(wrong_first.sum()),
        wrong_first_team_share=float(wrong_first.mean()),
        ping_pong_cases=int(ping.sum()),
        ping_pong_share=float(ping.mean()),
        extra_hours_mean=_hours(x_mis.mean()) if len(x_mis) else None,
        extra_hours_total=float(x_mis.sum()) / 3600.0,
        teams=_top_teams(teams, cfg.top_n),
        pairs=pairs[: max(cfg.top_n, 0) * 4],
        ping_pong_pairs=pp_pairs[: cfg.top_n],
        push_to_front=push,
        channel_transfers=channel_transfers,
        cases=cases,
        labels=cl,
        taxonomy=taxonomy,
        duration_basis=basis,
        worst_first_team=worst,
    )


def _top_teams(teams: list[TeamMisrouting], top_n: int) -> list[TeamMisrouting]:
    """The teams that pass most cases on, plus those whose avoidable transfers cost most, in the first order."""
    keep = teams[: max(top_n, 0) * 4]
    names = {t.team for t in keep}
    by_avoidable = sorted((t for t in teams if t.avoidable_out), key=lambda t: (-t.avoidable_hours, t.team))
    extra = [t for t in by_avoidable[: max(top_n, 0)] if t.team not in names]
    rank = {t.team: i for i, t in enumerate(teams)}
    return sorted(keep + extra, key=lambda t: rank[t.team])


def _taxonomy(
    cases: pd.DataFrame,
    cl: CaseLabels,
    seg: pd.DataFrame,
    enc: EncodedLog,
    reassigned: np.ndarray,
    wrong_first: np.ndarray,
    extra: np.ndarray,
    cfg: MisroutingConfig,
) -> list[TransferKind]:
    """Fill cases['transfer_kind'] (see the module docstring) and summarise each kind."""
    n = len(cases)
    # A reopen event before a counted team change: the customer's reopen moved the case, not a routing choice.
    rx = re.compile(cfg.labels.reopen_pattern, re.IGNORECASE) if cfg.labels.reopen_pattern else None
    bounced = np.zeros(n, dtype=bool)
    if rx is not None:
        hit = np.array([bool(rx.search(str(a))) for a in enc.activity.labels], dtype=bool)
        if hit.any():
            reopen_ev = np.flatnonzero(hit[enc.activity.codes])
            first_reopen = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first_reopen, enc.case[reopen_ev], reopen_ev)
            counted = seg[seg["counted"]]
            changes = counted[counted.groupby("case").cumcount() > 0]
            c = changes["case"].to_numpy(dtype=np.int64)
            after = changes["pos"].to_numpy(dtype=np.int64) > first_reopen[c]
            bounced[c[after]] = True
    ping = cases["ping_pong"].to_numpy(dtype=bool)
    stay = cases["could_have_stayed"].to_numpy(dtype=bool) if "could_have_stayed" in cases else np.zeros(n, bool)
    esc = cases["escalations"].to_numpy(dtype=np.int64) > 0 if "escalations" in cases else np.zeros(n, bool)
    if "resolving_line" in cases and "first_line" in cases:
        up = (cases["resolving_line"].fillna(0).to_numpy(dtype=np.int64)
              > cases["first_line"].fillna(99).to_numpy(dtype=np.int64))
    else:
        up = np.zeros(n, dtype=bool)
    moved = (cases["first_team"].astype("string").fillna("").to_numpy(dtype=object)
             != cases["resolving_team"].astype("string").fillna("").to_numpy(dtype=object))
    kind = np.full(n, None, dtype=object)
    rest = reassigned.copy()
    for name, mask in (
        ("bounced_by_reopen", bounced),
        ("ping_pong", ping),
        ("push_to_front", stay),
        # With escalate steps in the log, a move up without one is a plain transfer; without any (BPIC 2013),
        # moving up a support line is what escalation looks like.
        ("justified_escalation", (esc if esc.any() else up) & moved),
        ("misroute", wrong_first),
        ("other_transfer", np.ones(n, dtype=bool)),
    ):
        pick = rest & mask
        kind[pick] = name
        rest &= ~pick
    cases["transfer_kind"] = kind
    ids = cases.index.to_numpy()
    out = []
    for name, (avoidable, meaning) in TRANSFER_KINDS.items():
        m = kind == name
        x = extra[m & np.isfinite(extra)]
        # Examples: the costliest cases first, so a reader opens the ones that matter.
        order = np.argsort(-np.nan_to_num(extra[m], nan=-np.inf), kind="stable")[: cfg.max_example_cases]
        out.append(TransferKind(
            kind=name, avoidable=avoidable, meaning=meaning, cases=int(m.sum()), share_of_cases=float(m.mean()),
            extra_hours_total=float(x.sum()) / 3600.0, extra_hours_mean=_hours(x.mean()) if len(x) else None,
            example_cases=[str(i) for i in ids[m][order]],
        ))
    return out


def _push_to_front(
    log: EventLog,
    cl: CaseLabels,
    counted: pd.DataFrame,
    cases: pd.DataFrame,
    cfg: MisroutingConfig,
    enc: EncodedLog | None,
) -> PushToFront | None:
    """Fills cases['pushed'] / cases['could_have_stayed'] and summarises; None without support lines."""
    if cl.lines is None or "first_line" not in cases:
        return None
    n = len(cases)
    lines = counted["team"].map(pd.Series(cl.lines)).fillna(1).to_numpy(dtype=np.int64)
    cnum = counted["case"].to_numpy(dtype=np.int64)
    first_line = cases["first_line"].fillna(0).to_numpy(dtype=np.int64)
    max_line = np.zeros(n, dtype=np.int64)
    np.maximum.at(max_line, cnum, lines)
    pushed = (first_line == 1) & (max_line > 1)
    resolving_line = cases["resolving_line"].fillna(0).to_numpy(dtype=np.int64)
    back = pushed & (resolving_line == 1)
    higher = lines > 1
    # Higher-line work before resolution: did anyone there actually work on it (activity matching work_pattern)?
    e = enc if enc is not None else encode(log)
    gc = e.column(GROUP)
    act_labels = [str(x) for x in e.activity.labels]
    line_of_code = np.array([cl.lines.get(str(g), 0) for g in gc.labels] + [0], dtype=np.int64)
    line_ev = line_of_code[gc.codes]
    upto = cl.resolve_pos if cl.resolve_pos is not None else np.full(n, np.iinfo(np.int64).max)
    upto = np.where(upto >= 0, upto, np.iinfo(np.int64).max)
    before = np.arange(e.n_events) <= upto[e.case]
    hi_ev = (line_ev > 1) & before
    rx_work = re.compile(cfg.work_pattern, re.IGNORECASE) if cfg.work_pattern else None
    # Regexes run once per distinct activity, then spread to events through the activity codes.
    work_hit = (
        np.array([bool(rx_work.search(a)) for a in act_labels], dtype=bool)[e.activity.codes]
        if rx_work is not None
        else np.zeros(e.n_events, dtype=bool)
    )
    worked_high = np.bincount(e.case[hi_ev & work_hit], minlength=n) > 0
    trivial = pushed & ~back & ~worked_high
    if cfg.trivial_pattern:
        # Higher-line work made only of activities matching the pattern also counts as trivial.
        rx = re.compile(cfg.trivial_pattern, re.IGNORECASE)
        hit = np.array([bool(rx.search(a)) for a in act_labels], dtype=bool)[e.activity.codes]
        not_trivial = np.bincount(e.case[hi_ev & ~hit], minlength=n) > 0
        trivial |= pushed & ~back & ~not_trivial
    del higher
    stay = back | trivial
    cases["pushed"] = pushed
    cases["could_have_stayed"] = stay
    n_first = int((first_line == 1).sum())
    by_line = {f"L{int(k)}": int(v) for k, v in pd.Series(max_line[pushed]).value_counts().sort_index().items()}
    return PushToFront(
        first_line_cases=n_first,
        pushed_cases=int(pushed.sum()),
        pushed_share=float(pushed.sum()) / max(n_first, 1),
        could_have_stayed=int(stay.sum()),
        could_have_stayed_share=float(stay.sum()) / max(int(pushed.sum()), 1),
        resolved_back_in_first_line=int(back.sum()),
        trivial_higher_line_work=int(trivial.sum()),
        by_line=by_line,
        example_cases=[str(c) for c in cases.index[stay][: cfg.max_example_cases]],
    )


def _channel_transfers(log: EventLog, cfg: MisroutingConfig) -> list[ChannelTransfer]:
    """Consecutive channel changes inside a case (event-level channel column)."""
    if not log.has(CHANNEL):
        return []
    df = log.df
    ch = df[CHANNEL].astype("string")
    case = df[CASE_ID]
    valid = ch.notna()
    d = pd.DataFrame({"case": case[valid].to_numpy(), "ch": ch[valid].to_numpy()})
    prev = d["ch"].shift(1)
    same_case = d["case"].shift(1) == d["case"]
    moved = same_case & (prev != d["ch"])
    if not moved.any():
        return []
    t = pd.DataFrame({"a": prev[moved].to_numpy(), "b": d["ch"][moved].to_numpy(), "case": d["case"][moved].to_numpy()})
    agg = t.groupby(["a", "b"]).agg(transfers=("case", "size"), cases=("case", "nunique")).reset_index()
    agg = agg.sort_values(["transfers", "a", "b"], ascending=[False, True, True])
    return [
        ChannelTransfer(str(r.a), str(r.b), int(r.transfers), int(r.cases))
        for r in agg.head(cfg.top_n).itertuples()
    ]
