"""The simulated support organisation (teams, agents, intents) and the knobs of the planted patterns."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import InvalidInput

CHANNELS: tuple[str, ...] = ("phone", "chat", "email", "portal")
SEGMENTS: tuple[str, ...] = ("consumer", "smb", "enterprise")
SEGMENT_WEIGHTS: tuple[float, ...] = (0.62, 0.27, 0.11)
PRIORITIES: tuple[str, ...] = ("P1", "P2", "P3", "P4")
# Rows: segment; columns: priority. Enterprise customers get urgent tickets more often.
PRIORITY_BY_SEGMENT: tuple[tuple[float, ...], ...] = (
    (0.03, 0.15, 0.57, 0.25),
    (0.06, 0.24, 0.52, 0.18),
    (0.14, 0.36, 0.40, 0.10),
)
# Queue waits shrink for urgent tickets.
PRIORITY_WAIT_FACTOR: tuple[float, ...] = (0.3, 0.6, 1.0, 1.4)

PRODUCTS: tuple[str, ...] = (
    "Nimbus Cloud",
    "Nimbus Mobile",
    "Nimbus Pay",
    "Nimbus Home Router",
    "Nimbus API",
    "Nimbus Shop",
)


@dataclass(frozen=True)
class Team:
    """A support team; the support line is in the name suffix (L1/L2/L3) so miners can derive it."""

    name: str
    n_agents: int


TEAMS: tuple[Team, ...] = (
    Team("Service Desk L1", 18),
    Team("Billing L2", 7),
    Team("Accounts L2", 7),
    Team("Logistics L2", 6),
    Team("Tech Support L2", 8),
    Team("Engineering L3", 5),
    Team("Security L3", 4),
    Team("Approvals", 3),
)
TEAM_NAMES: tuple[str, ...] = tuple(t.name for t in TEAMS)
L1 = "Service Desk L1"


@dataclass(frozen=True)
class IntentSpec:
    """One customer intent: how often it occurs, who should resolve it and how it tends to arrive."""

    name: str
    team: str
    weight: float
    # Intent whose wording leaks into ambiguous tickets of this intent; its team is where they get misrouted.
    confuser: str
    channels: tuple[float, float, float, float]  # phone, chat, email, portal
    products: tuple[str, ...]
    approval: bool = False
    escalate_to: str | None = None  # legitimate escalation target (real work at the higher tier)
    escalate_share: float = 0.0


INTENTS: tuple[IntentSpec, ...] = (
    IntentSpec("billing dispute", "Billing L2", 0.09, "cancel subscription", (0.35, 0.2, 0.35, 0.1),
               ("Nimbus Cloud", "Nimbus Mobile", "Nimbus Pay")),
    IntentSpec("refund request", "Billing L2", 0.08, "login issue", (0.2, 0.25, 0.35, 0.2),
               ("Nimbus Shop", "Nimbus Pay", "Nimbus Mobile"), approval=True),
    IntentSpec("password reset", L1, 0.10, "login issue", (0.2, 0.35, 0.1, 0.35),
               ("Nimbus Cloud", "Nimbus Mobile", "Nimbus Pay")),
    IntentSpec("login issue", "Accounts L2", 0.08, "security concern", (0.3, 0.3, 0.25, 0.15),
               ("Nimbus Cloud", "Nimbus Mobile", "Nimbus Pay"), escalate_to="Security L3", escalate_share=0.05),
    IntentSpec("delivery delay", "Logistics L2", 0.08, "refund request", (0.3, 0.3, 0.3, 0.1),
               ("Nimbus Shop", "Nimbus Home Router")),
    IntentSpec("damaged item", "Logistics L2", 0.05, "refund request", (0.2, 0.25, 0.45, 0.1),
               ("Nimbus Shop", "Nimbus Home Router")),
    IntentSpec("plan upgrade", L1, 0.06, "billing dispute", (0.3, 0.35, 0.15, 0.2),
               ("Nimbus Cloud", "Nimbus Mobile"), escalate_to="Accounts L2", escalate_share=0.05),
    IntentSpec("cancel subscription", "Accounts L2", 0.06, "refund request", (0.4, 0.25, 0.3, 0.05),
               ("Nimbus Cloud", "Nimbus Mobile", "Nimbus Pay"), approval=True),
    IntentSpec("api error", "Tech Support L2", 0.06, "outage report", (0.05, 0.2, 0.6, 0.15),
               ("Nimbus API", "Nimbus Cloud"), escalate_to="Engineering L3", escalate_share=0.25),
    IntentSpec("data export", "Tech Support L2", 0.05, "security concern", (0.1, 0.2, 0.55, 0.15),
               ("Nimbus Cloud", "Nimbus API")),
    IntentSpec("invoice copy", L1, 0.07, "billing dispute", (0.1, 0.25, 0.35, 0.3),
               ("Nimbus Cloud", "Nimbus Mobile", "Nimbus Pay", "Nimbus Shop")),
    IntentSpec("address change", L1, 0.06, "delivery delay", (0.25, 0.3, 0.2, 0.25),
               ("Nimbus Shop", "Nimbus Home Router", "Nimbus Mobile")),
    IntentSpec("outage report", "Engineering L3", 0.04, "api error", (0.55, 0.25, 0.15, 0.05),
               ("Nimbus Cloud", "Nimbus Home Router", "Nimbus API")),
    IntentSpec("security concern", "Security L3", 0.04, "password reset", (0.4, 0.2, 0.35, 0.05),
               ("Nimbus Cloud", "Nimbus Pay", "Nimbus Mobile")),
    IntentSpec("order status", L1, 0.08, "delivery delay", (0.25, 0.4, 0.15, 0.2),
               ("Nimbus Shop", "Nimbus Home Router")),
)
INTENT_NAMES: tuple[str, ...] = tuple(i.name for i in INTENTS)

# Where an L1 ticket gets pushed when L1 escalates it without need ("push-to-front").
PUSH_TARGET: dict[str, str] = {
    "password reset": "Accounts L2",
    "plan upgrade": "Accounts L2",
    "invoice copy": "Billing L2",
    "address change": "Logistics L2",
    "order status": "Logistics L2",
}


@dataclass(frozen=True)
class AgentStep:
    """A step an agent may take after work starts, and its planted effect on the rest of the case.

    `hours_factor` multiplies every wait from the step to the resolution (except the approval wait);
    `reopen_factor` multiplies the chance of a rework loop; `article_step` is the index of the article's agent step
    the label names (None: the article does not describe it).
    """

    activity: str
    share: float  # of the intent's cases
    hours_factor: float = 1.0
    reopen_factor: float = 1.0
    article_step: int | None = None


def _steps(*specs: tuple[str, float, float, float, int | None]) -> tuple[AgentStep, ...]:
    return tuple(AgentStep(a, s, h, r, i) for a, s, h, r, i in specs)


# Per intent: (label, share, hours factor, reopen factor, article step index). One step per intent has the
# largest planted benefit; one is a pure distractor (no effect); their positions differ between intents.
AGENT_STEPS: dict[str, tuple[AgentStep, ...]] = {
    "billing dispute": _steps(("Open billing history", 0.5, 0.85, 1.0, 0), ("Compare charge with plan price", 0.4,
                              0.45, 0.35, 1), ("Explain usage charges", 0.5, 1.0, 1.0, 3)),
    "refund request": _steps(("Check refund window", 0.4, 0.5, 0.3, 0), ("Issue refund to original payment", 0.5,
                             0.85, 1.0, 2), ("Share refund date", 0.5, 1.0, 1.0, None)),
    "password reset": _steps(("Confirm identity", 0.5, 1.0, 1.0, 0), ("Send fresh reset link", 0.4, 0.45, 0.4, 1),
                             ("Check spam folder", 0.5, 0.85, 1.0, 2)),
    "login issue": _steps(("Unlock account", 0.5, 0.85, 1.0, 0), ("Re-sync two-factor device", 0.4, 0.5, 0.35, 1),
                          ("Check browser cookies", 0.5, 1.0, 1.0, None)),
    "delivery delay": _steps(("Look up tracking", 0.5, 1.0, 1.0, 0), ("Share tracking link", 0.5, 0.85, 1.0, 1),
                             ("Open carrier trace", 0.4, 0.45, 0.4, 2)),
    "damaged item": _steps(("Ask for photos", 0.5, 0.85, 1.0, 0), ("Create replacement order", 0.4, 0.5, 0.3, 1),
                           ("Log carrier claim", 0.5, 1.0, 1.0, 2)),
    "plan upgrade": _steps(("Confirm target plan", 0.5, 1.0, 1.0, 0), ("Apply upgrade in console", 0.4, 0.45, 0.4,
                           1), ("Explain proration", 0.5, 0.85, 1.0, 2)),
    "cancel subscription": _steps(("Record churn reason", 0.5, 1.0, 1.0, 0), ("Schedule cancellation", 0.4, 0.5,
                                  0.35, 1), ("Confirm cancellation in writing", 0.5, 0.85, 1.0, None)),
    "api error": _steps(("Ask for request id", 0.4, 0.45, 0.35, 0), ("Check API key status", 0.5, 0.85, 1.0, 1),
                        ("Explain rate limits", 0.5, 1.0, 1.0, None)),
    "data export": _steps(("Check export permissions", 0.5, 1.0, 1.0, None), ("Run export in batches", 0.4, 0.5,
                          0.4, None), ("Send export link", 0.5, 0.85, 1.0, None)),
    "invoice copy": _steps(("Find invoice", 0.5, 0.85, 1.0, 0), ("Email invoice PDF", 0.4, 0.45, 0.4, 1),
                           ("Verify billing contact", 0.5, 1.0, 1.0, None)),
    "address change": _steps(("Verify identity", 0.5, 1.0, 1.0, 0), ("Update address", 0.4, 0.5, 0.35, 1),
                             ("Request carrier redirect", 0.5, 0.85, 1.0, 2)),
    "outage report": _steps(("Check status page", 0.5, 0.85, 1.0, 0), ("Link to open incident", 0.4, 0.45, 0.4, 1),
                            ("Share status page link", 0.5, 1.0, 1.0, None)),
    "security concern": _steps(("Sign out all sessions", 0.4, 0.5, 0.3, 0), ("Review recent logins", 0.5, 0.85, 1.0,
                               1), ("Enable two-factor", 0.5, 1.0, 1.0, None)),
    "order status": _steps(("Look up fulfilment status", 0.5, 1.0, 1.0, 0), ("Share expected ship date", 0.4, 0.5,
                           0.4, 1), ("Check order confirmation", 0.5, 0.85, 1.0, None)),
}


def planted_benefit(step: AgentStep) -> float:
    """Share of the post-work time a step saves, rework included (for ordering steps by planted benefit)."""
    return 1.0 - step.hours_factor * (0.5 + 0.5 * step.reopen_factor)


def best_step(intent: str) -> str:
    """The intent's step with the largest planted benefit."""
    return max(AGENT_STEPS[intent], key=planted_benefit).activity


@dataclass
class SimConfig:
    """Rates and sizes of the planted patterns (shares are of all cases unless the name says otherwise)."""

    # (1) misrouting: share of tickets whose text borrows another intent's wording, and routing error rates
    ambiguous_share: float = 0.25
    misroute_if_ambiguous: float = 0.55
    misroute_base: float = 0.05
    # (2) ping-pong between two teams on cases owned by one of them
    pingpong_pair: tuple[str, str] = ("Billing L2", "Accounts L2")
    pingpong_share: float = 0.15  # of eligible (owned by the pair, not misrouted) cases
    # (3) push-to-front: share of L1-owned cases escalated and then resolved with a trivial step
    push_to_front_share: float = 0.25
    # (4) slow approval step
    approval_median_hours: float = 48.0
    approval_sigma: float = 0.5
    # (5) rework loops
    rework_share: float = 0.10
    second_loop_share: float = 0.25  # of rework cases
    # (6) policy deviations
    skip_triage_share: float = 0.04
    close_early_share: float = 0.03
    # (7) knowledge gap
    knowledge_gap_intent: str = "data export"
    knowledge_gap_factor: float = 4.0
    # drift: a new variant ("Bot handoff" right after creation) on chat tickets of the last week
    drift_share: float = 0.7  # of last-week chat cases
    # channel transfers (chat -> phone call-back, portal -> email)
    transfer_share: float = 0.10
    # office hours: 2nd/3rd line and approvals work Mon-Fri 08:00-18:00 UTC (the first line is 24/7)
    business_hours: bool = False
    # customer waits and self-service
    wait_customer_share: float = 0.30
    self_service_share: float = 0.6  # of portal tickets
    # text (ticket_text=False leaves subject/body empty: for mining benchmarks that only need the events)
    ticket_text: bool = True
    typo_share: float = 0.30
    pii_share: float = 0.35
    vague_share: float = 0.04
    family_share: float = 0.35  # tickets opening with wording shared by a family of related intents
    case_prefix: str = "C"
    # planted agent steps (AGENT_STEPS) with known effects on resolution time and reopening; off keeps a seed's log
    agent_steps: bool = False
    # ticket fields an agent sees next to the text (customer_name, order_id), for drafts filled from the ticket
    ticket_fields: bool = False

    def validate(self) -> None:
        """Raise InvalidInput naming the first share outside [0, 1] or an unknown team/intent."""
        for name, value in vars(self).items():
            if (name.endswith("_share") or name.startswith("misroute")) and not 0.0 <= float(value) <= 1.0:
                raise InvalidInput(f"SimConfig.{name} must be within [0, 1], got {value}", field=name)
        for team in self.pingpong_pair:
            if team not in TEAM_NAMES:
                raise InvalidInput(f"SimConfig.pingpong_pair names unknown team {team!r}", field="pingpong_pair")
        if self.pingpong_pair[0] == self.pingpong_pair[1]:
            raise InvalidInput("SimConfig.pingpong_pair needs two different teams", field="pingpong_pair")
        if self.knowledge_gap_intent not in INTENT_NAMES:
            raise InvalidInput(
                f"SimConfig.knowledge_gap_intent {self.knowledge_gap_intent!r} is not one of {list(INTENT_NAMES)}",
                field="knowledge_gap_intent",
            )
        if self.knowledge_gap_factor <= 0 or self.approval_median_hours <= 0:
            raise InvalidInput("knowledge_gap_factor and approval_median_hours must be positive",
                               field="knowledge_gap_factor")
