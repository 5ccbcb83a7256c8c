"""Handover-of-work networks between resources or teams.

A handover is a pair of consecutive events in a case whose resource (or team) is known; the count of
(a, b) pairs is exactly what `pm4py.discover_handover_of_work_network(beta=0)` counts before normalising
(it divides every count by the total, which is our `share`). Like pm4py, consecutive events by the same
resource count as a self-handover (a -> a) unless `include_self=False`. Events without a value are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from insight.errors import InvalidInput
from insight.eventlog.schema import GROUP, RESOURCE, EventLog
from insight.mining._core import (
    EncodedLog,
    distinct_per_key,
    ensure_encoded,
    follows,
    group_stats,
    pair_counts,
)


@dataclass
class HandoverEdge:
    """Work passed from `source` to `target`: how often, in how many cases, share of all handovers, wait."""

    source: str
    target: str
    count: int
    cases: int
    share: float
    mean_wait_s: float


@dataclass
class HandoverNode:
    """A resource or team with the handovers it sends and receives (self-handovers excluded)."""

    name: str
    events: int
    sent: int
    received: int


@dataclass
class HandoverNetwork:
    """Directed handover-of-work network at resource or team level."""

    column: str
    include_self: bool
    total: int
    edges: list[HandoverEdge]
    nodes: list[HandoverNode]

    def counts(self) -> dict[tuple[str, str], int]:
        """Handover counts keyed by (source, target)."""
        return {(e.source, e.target): e.count for e in self.edges}

    def shares(self) -> dict[tuple[str, str], float]:
        """Counts divided by the total: the values pm4py's handover network reports (beta=0)."""
        return {(e.source, e.target): e.share for e in self.edges}

    def to_dict(self, *, limit: int | None = 200) -> dict[str, Any]:
        """JSON-ready form (the `limit` largest edges; None for all)."""
        es = self.edges if limit is None else self.edges[:limit]
        return {
            "column": self.column,
            "include_self": self.include_self,
            "total": self.total,
            "edges": [asdict(e) for e in es],
            "nodes": [asdict(n) for n in self.nodes],
        }


def handover_network(
    log: EventLog | None = None,
    *,
    enc: EncodedLog | None = None,
    column: str = RESOURCE,
    include_self: bool = True,
) -> HandoverNetwork:
    """Count handovers of work between consecutive events' `column` values (resource or group) per case."""
    enc = ensure_encoded(log, enc)
    if not enc.has(column):
        raise InvalidInput(f"handover network needs column {column!r} with values", field=column)
    col = enc.column(column)
    pairs = follows(enc, col.codes, skip_missing=True)
    n = col.n
    if not include_self:
        diff = pairs.src != pairs.dst
        src_event, src, dst = pairs.src_event[diff], pairs.src[diff], pairs.dst[diff]
    else:
        src_event, src, dst = pairs.src_event, pairs.src, pairs.dst
    s, d, c = pair_counts(src, dst, n)
    total = int(c.sum())
    key = src.astype(np.int64) * n + dst
    # the next event with a value is where the work arrived; its time minus the handing event's is the wait
    valid = np.flatnonzero(col.codes >= 0)
    nxt = valid[np.searchsorted(valid, src_event, side="right")] if len(src_event) else src_event
    # mean (not median) wait: a bincount instead of a sort keeps the network as cheap as the counts
    width = n * n
    wait_sum = (
        np.bincount(key, weights=(enc.ts[nxt] - enc.ts[src_event]).astype(np.float64), minlength=width)
        if width <= 4 * len(key) + 1_000_000
        else None
    )
    ck, cc = distinct_per_key(enc.case[src_event], key)
    cases = dict(zip(ck.tolist(), cc.tolist(), strict=True))
    if wait_sum is None:
        gs = group_stats(key, enc.ts[nxt] - enc.ts[src_event], scale=enc.units_per_second)
        mean_wait = dict(zip(gs.group.tolist(), gs.total.tolist(), strict=True))
    else:
        ups = enc.units_per_second
        mean_wait = {int(k): float(wait_sum[k]) / ups for k in ck.tolist()}
    edges = [
        HandoverEdge(
            source=str(col.labels[a]),
            target=str(col.labels[b]),
            count=int(k),
            cases=int(cases[int(a) * n + int(b)]),
            share=float(k / total) if total else 0.0,
            mean_wait_s=mean_wait[int(a) * n + int(b)] / int(k),
        )
        for a, b, k in zip(s, d, c, strict=True)
    ]
    edges.sort(key=lambda e: (-e.count, e.source, e.target))
    real = s != d
    sent = np.bincount(s[real], weights=c[real], minlength=n)
    recv = np.bincount(d[real], weights=c[real], minlength=n)
    events = np.bincount(col.codes[col.codes >= 0], minlength=n)
    nodes = [
        HandoverNode(name=str(col.labels[i]), events=int(events[i]), sent=int(sent[i]), received=int(recv[i]))
        for i in range(n)
    ]
    nodes.sort(key=lambda x: -(x.sent + x.received))
    return HandoverNetwork(column=column, include_self=include_self, total=total, edges=edges, nodes=nodes)


def team_handover_network(log: EventLog | None = None, *, enc: EncodedLog | None = None) -> HandoverNetwork:
    """Handovers between teams (`group` column), self-handovers excluded: work actually changing teams."""
    return handover_network(log, enc=enc, column=GROUP, include_self=False)
