"""The exact ground truth of a simulated log: which cases carry which planted pattern, and the planted figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MisroutingTruth:
    """Cases first assigned to a wrong team and then reassigned to the team that owns their intent."""

    cases: list[str]
    share: float
    # Misrouted cases whose text borrowed another intent's wording (the learnable part of misrouting).
    ambiguous_cases: list[str]
    ambiguous_share: float  # share of all tickets with borrowed wording
    misroute_rate_if_ambiguous: float  # measured on this log
    misroute_rate_if_clear: float
    # Every case with at least one team change before work (misrouted plus ping-pong).
    reassigned_cases: list[str]


@dataclass
class PingPongTruth:
    """Cases bouncing owner -> other -> owner between one team pair."""

    team_a: str
    team_b: str
    cases: list[str]
    share: float


@dataclass
class PushToFrontTruth:
    """L1 cases escalated to a higher line; those resolved there with a trivial step could have stayed at L1."""

    escalated_cases: list[str]  # every case escalated from L1 (planted push-to-front and legitimate)
    could_have_stayed: list[str]  # escalated, then resolved by a quick "Solution proposed" with no work started
    share_of_l1_cases: float  # could_have_stayed / cases first assigned to L1 (the observable L1 workload)
    trivial_step: str


@dataclass
class SlowStepTruth:
    """The planted bottleneck: the wait before `activity` (after `after`)."""

    activity: str
    after: str
    median_wait_hours: float | None  # None when the log has no approval case
    cases: list[str]
    # Median wait before every activity, measured on this log (hours), for comparison.
    median_wait_by_activity_hours: dict[str, float]


@dataclass
class ReworkTruth:
    """Cases with Solution proposed -> Reopened -> Work started loops."""

    cases: list[str]
    share: float
    loops: dict[str, int]  # case -> number of loops (1 or 2)


@dataclass
class DeviationTruth:
    """Policy deviations from the intended journey."""

    intended_journey: list[dict[str, Any]]  # ordered steps: activity, optional, block (steps skipped together)
    allowed_transitions: list[list[str]]  # every directly-follows pair a conforming case can show
    cases: dict[str, list[str]]  # kind -> cases ("skipped_triage", "closed_without_solution")
    all_cases: list[str]
    share: float


@dataclass
class KnowledgeGapTruth:
    """One intent whose cases take far longer than comparable ones."""

    intent: str
    planted_factor: float  # multiplier on its work and solution times
    team: str
    measured_throughput_ratio: float | None  # median throughput vs other intents of the same team (None if absent)


@dataclass
class DriftTruth:
    """A new variant appearing in the last week."""

    activity: str
    week_index: int  # 0-based week of the simulation
    week_start: str  # ISO date
    cases: list[str]
    share_of_week: float


@dataclass
class StepEffectTruth:
    """Planted agent steps (SimConfig.agent_steps): per intent their effect factors and the best one."""

    decision_point: str  # the steps happen right after this activity
    steps: dict[str, list[dict[str, Any]]]  # intent -> steps in article order (factors, planted_benefit, figures)
    best: dict[str, str]  # intent -> the step with the largest planted benefit
    cases: dict[str, list[str]]  # step -> cases that took it


@dataclass
class GroundTruth:
    """Everything planted in a simulated log (JSON-ready via to_dict)."""

    seed: int
    n_cases: int
    n_events: int
    start: str
    weeks: int
    teams: dict[str, str]  # team -> support line ("L1", "L2", "L3" or "" for Approvals)
    agents: dict[str, list[str]]  # team -> agent ids
    intent_teams: dict[str, str]  # intent -> owning team
    misrouting: MisroutingTruth
    ping_pong: PingPongTruth
    push_to_front: PushToFrontTruth
    slow_step: SlowStepTruth
    rework: ReworkTruth
    deviations: DeviationTruth
    knowledge_gap: KnowledgeGapTruth
    drift: DriftTruth
    channel_transfers: list[str] = field(default_factory=list)
    agent_steps: StepEffectTruth | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists, dicts, str, int, float only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundTruth:
        """Inverse of to_dict (e.g. for a truth.json written by `deskpilot simulate`)."""
        parts = {
            "misrouting": MisroutingTruth,
            "ping_pong": PingPongTruth,
            "push_to_front": PushToFrontTruth,
            "slow_step": SlowStepTruth,
            "rework": ReworkTruth,
            "deviations": DeviationTruth,
            "knowledge_gap": KnowledgeGapTruth,
            "drift": DriftTruth,
        }
        kwargs = dict(data)
        for name, kind in parts.items():
            kwargs[name] = kind(**data[name])
        if data.get("agent_steps") is not None:
            kwargs["agent_steps"] = StepEffectTruth(**data["agent_steps"])
        return cls(**kwargs)
