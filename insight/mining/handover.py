"""Handover-of-work networks between resources or teams.

A handover is a pair of consecutive events in a case whose resource (or team) is known; the count of
(a, b) pairs is exactly what `pm4py.discover_handover_of_work_network(beta=0)` counts before normalising
(it divides every count by the total, which is our `share`). Like pm4py, consecutive events by the same
resource count as a self-handover (a -> a) unless `include_self=False`. Events without a value are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InvalidInput
from insight.eventlog.schema import GROUP, RESOURCE, EventLog
from insight.mining._core import (
    EncodedLog,
    distinct_per_key,
    ensure_encoded,
    grouping,
)


@dataclass(slots=True)
class HandoverEdge:
    """Work passed from `source` to `target`: how often, in how many cases, share of all handovers, wait."""

    source: str
    target: str
    count: int
    cases: int
    share: float
    mean_wait_s: float


@dataclass(slots=True)
class HandoverNode:
    """A resource or team with the handovers it sends and receives (self-handovers excluded)."""

    name: str
    events: int
    sent: int
    received: int


@dataclass
class HandoverNetwork:
    """Directed handover-of-work network at resource or team level.

    The edges are held as arrays (`source_codes`, `target_codes`, `edge_counts`, ...) and turned into
    `HandoverEdge` objects only when `edges` is first read, since resource networks can have ~10^5 edges.
    """

    column: str
    include_self: bool
    total: int
    nodes: list[HandoverNode]
    labels: np.ndarray = field(repr=False)
    source_codes: np.ndarray = field(repr=False)
    target_codes: np.ndarray = field(repr=False)
    edge_counts: np.ndarray = field(repr=False)
    edge_cases: np.ndarray = field(repr=False)
    edge_mean_wait_s: np.ndarray = field(repr=False)
    _edges: list[HandoverEdge] | None = field(default=None, repr=False)

    @property
    def edges(self) -> list[HandoverEdge]:
        """All edges, largest count first (ties by source, target name)."""
        if self._edges is None:
            src = self.labels[self.source_codes]
            dst = self.labels[self.target_codes]
            c = self.edge_counts
            o = np.lexsort((dst.astype(str), src.astype(str), -c)) if len(c) else np.zeros(0, np.int64)
            share = c / self.total if self.total else np.zeros(len(c))
            self._edges = [
                HandoverEdge(a, b, k, n, sh, w)
                for a, b, k, n, sh, w in zip(
                    src[o].tolist(), dst[o].tolist(), c[o].tolist(), self.edge_cases[o].tolist(),
                    share[o].tolist(), self.edge_mean_wait_s[o].tolist(), strict=True,
                )
            ]
        return self._edges

    def counts(self) -> dict[tuple[str, str], int]:
        """Handover counts keyed by (source, target)."""
        names = self.labels.tolist()
        return {
            (names[a], names[b]): k
            for a, b, k in zip(self.source_codes.tolist(), self.target_codes.tolist(), self.edge_counts.tolist(),
                               strict=True)
        }

    def shares(self) -> dict[tuple[str, str], float]:
        """Counts divided by the total: the values pm4py's handover network reports (beta=0)."""
        return {k: v / self.total for k, v in self.counts().items()} if self.total else {}

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
    pairs = enc.column_follows(column)
    n = col.n
    if not include_self:
        diff = pairs.src != pairs.dst
        src_event, dst_event, src, dst = pairs.src_event[diff], pairs.dst_event[diff], pairs.src[diff], pairs.dst[diff]
    else:
        src_event, dst_event, src, dst = pairs.src_event, pairs.dst_event, pairs.src, pairs.dst
    key = src.astype(np.int64) * n + dst
    by = grouping(key)  # one grouping of the (source, target) keys for counts, waits and cases
    s, d, c = by.keys // n, by.keys % n, by.count
    total = int(c.sum())
    # the next event with a value is where the work arrived; its time minus the handing event's is the wait
    waits = (enc.ts[dst_event] - enc.ts[src_event]).astype(np.float64) / enc.units_per_second
    # mean (not median) wait: a bincount instead of a sort keeps the network as cheap as the counts
    wait_sum = np.bincount(by.rank, weights=waits, minlength=len(by.keys))
    _, cases = distinct_per_key(enc.case[src_event], key, by=by)
    real = s != d
    sent = np.bincount(s[real], weights=c[real], minlength=n)
    recv = np.bincount(d[real], weights=c[real], minlength=n)
    events = np.bincount(col.codes + 1, minlength=n + 1)[1:]  # code -1 (no value) lands in the dropped bin
    nodes = [
        HandoverNode(name=str(col.labels[i]), events=int(events[i]), sent=int(sent[i]), received=int(recv[i]))
        for i in range(n)
    ]
    nodes.sort(key=lambda x: -(x.sent + x.received))
    return HandoverNetwork(
        column=column,
        include_self=include_self,
        total=total,
        nodes=nodes,
        labels=np.array([str(x) for x in col.labels], dtype=object),
        source_codes=s,
        target_codes=d,
        edge_counts=c,
        edge_cases=cases,
        edge_mean_wait_s=wait_sum / np.maximum(c, 1),
    )


def team_handover_network(log: EventLog | None = None, *, enc: EncodedLog | None = None) -> HandoverNetwork:
    """Handovers between teams (`group` column), self-handovers excluded: work actually changing teams."""
    return handover_network(log, enc=enc, column=GROUP, include_self=False)
