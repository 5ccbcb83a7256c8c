"""Vectorised contact-center log generator: every case is a row of a fixed slot template, every event a slot.

Each case gets a boolean mask over the slots (which steps happen), a team per slot and a waiting time per slot,
all drawn as numpy arrays; flattening the mask row by row yields events already ordered by case and time.
Only the ticket text is built per case in Python (from pre-drawn uniforms), so a million events take seconds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import InvalidInput
from insight.eventlog.schema import (
    ACTIVITY,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    RESOURCE,
    TIMESTAMP,
    EventLog,
)
from insight.simulate.config import (
    AGENT_STEPS,
    CHANNELS,
    INTENTS,
    L1,
    PRIORITIES,
    PRIORITY_BY_SEGMENT,
    PRIORITY_WAIT_FACTOR,
    PRODUCTS,
    PUSH_TARGET,
    SEGMENT_WEIGHTS,
    SEGMENTS,
    TEAM_NAMES,
    TEAMS,
    SimConfig,
    best_step,
    planted_benefit,
)
from insight.simulate.text import N_DRAWS, render_tickets, ticket_fields
from insight.simulate.truth import (
    DeviationTruth,
    DriftTruth,
    GroundTruth,
    KnowledgeGapTruth,
    MisroutingTruth,
    PingPongTruth,
    PushToFrontTruth,
    ReworkTruth,
    SlowStepTruth,
    StepEffectTruth,
)

# The slot template: (activity, block). Slots of one optional block happen together or not at all
# (block None = mandatory in the intended journey). Blocks nested by name prefix are optional inside their parent.
SLOTS: tuple[tuple[str, str | None], ...] = (
    ("Self-service article viewed", "self_service"),  # 0
    ("Ticket created", None),  # 1
    ("Bot handoff", "bot"),  # 2  (drift: only in the last week)
    ("Triage", None),  # 3
    ("Assign to team", None),  # 4
    ("Reassign", "reassign"),  # 5
    ("Reassign", "reassign.back"),  # 6
    ("Work started", None),  # 7
    ("Escalate", "escalate"),  # 8
    ("Work started", "escalate.work"),  # 9
    ("Wait for customer", "wait"),  # 10
    ("Customer replied", "wait"),  # 11
    ("Approval requested", "approval"),  # 12
    ("Approval granted", "approval"),  # 13
    ("Solution proposed", None),  # 14
    ("Reopened", "rework"),  # 15
    ("Work started", "rework"),  # 16
    ("Solution proposed", "rework"),  # 17
    ("Reopened", "rework.second"),  # 18
    ("Work started", "rework.second"),  # 19
    ("Solution proposed", "rework.second"),  # 20
    ("Resolved", None),  # 21
    ("Closed", None),  # 22
)
(S_SELF, S_CREATED, S_BOT, S_TRIAGE, S_ASSIGN, S_RE1, S_RE2, S_WORK, S_ESC, S_WORK_ESC, S_WAIT, S_REPLY,
 S_APPREQ, S_APPGR, S_SOL, S_RO1, S_WK1, S_SOL1, S_RO2, S_WK2, S_SOL2, S_RESOLVED, S_CLOSED) = range(len(SLOTS))
N_SLOTS = len(SLOTS)
ACTIVITY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(a for a, _ in SLOTS))
SLOT_ACTIVITY_CODE = np.array([ACTIVITY_NAMES.index(a) for a, _ in SLOTS], dtype=np.int16)

# Median wait before each slot (minutes) and lognormal sigma; per-case factors are applied on top.
WAIT_MEDIAN_MIN = np.array([0, 6, 1.5, 30, 8, 240, 300, 150, 240, 360, 60, 900, 45, 2880, 180,
                            600, 120, 150, 600, 120, 150, 20, 720], dtype=float)
WAIT_SIGMA = np.array([0.1, 0.8, 0.5, 0.8, 0.7, 0.9, 0.9, 1.0, 0.8, 1.0, 0.8, 1.0, 0.7, 0.5, 0.9,
                       0.8, 0.9, 0.9, 0.8, 0.9, 0.9, 0.8, 0.6], dtype=float)
TRIAGE_CHANNEL_FACTOR = np.array([0.08, 0.15, 3.0, 2.0])  # phone, chat, email, portal
QUEUE_SLOTS = (S_TRIAGE, S_WORK, S_WORK_ESC)
# The knowledge gap slows everything from the start of work to the resolution (except the approval wait).
WORK_SLOTS = tuple(s for s in range(S_WORK, S_RESOLVED + 1) if s != S_APPGR)
PUSH_SOLUTION_MEDIAN_MIN = 6.0
PUSH_ESCALATE_MEDIAN_MIN = 45.0
TRIVIAL_STEP = "Solution proposed"
# Arrivals: weekday weights (Mon..Sun) and an hourly profile peaking in office hours.
WEEKDAY_WEIGHTS = np.array([1.15, 1.05, 1.0, 1.0, 0.95, 0.35, 0.25])
HOUR_WEIGHTS = np.array([0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.45, 0.9, 1.5, 1.8, 1.8, 1.7, 1.4, 1.5, 1.6, 1.5,
                         1.3, 1.0, 0.8, 0.7, 0.6, 0.5, 0.35, 0.25])
APPROVALS = "Approvals"
NO_TEAM = -1


@dataclass
class Simulation:
    """A simulated support log: the events, one ticket row per case, the planted truth and per-case truth flags."""

    log: EventLog
    tickets: pd.DataFrame
    truth: GroundTruth
    cases: pd.DataFrame  # per-case truth: home_team, misrouted, ping_pong, push_to_front, rework_loops, ...


def _intended_journey() -> list[dict[str, object]]:
    return [{"activity": a, "optional": b is not None, "block": b} for a, b in SLOTS]


def allowed_transitions() -> set[tuple[str, str]]:
    """Every directly-follows pair a case that follows the intended journey can show (from the slot grammar)."""
    blocks = sorted({b for _, b in SLOTS if b is not None})
    pairs: set[tuple[str, str]] = set()
    for on in itertools.product((False, True), repeat=len(blocks)):
        active = {b for b, o in zip(blocks, on, strict=True) if o}
        # A nested block ("a.b") needs its parent ("a").
        if any("." in b and b.split(".")[0] not in active for b in active):
            continue
        seq = [a for a, b in SLOTS if b is None or b in active]
        pairs.update(zip(seq, seq[1:], strict=False))
    return pairs


def _business_hours(rng: np.random.Generator, arrival_min: np.ndarray, wait_min: np.ndarray, mask: np.ndarray,
                    team: np.ndarray, start_weekday: int) -> np.ndarray:
    """Offsets (minutes from arrival) when 2nd/3rd-line and approval work only happens Mon-Fri 08:00-18:00.

    The first line is a 24/7 contact center; other teams' events falling outside office hours move to the next
    opening plus a short pick-up delay, one slot at a time so later waits start from the moved time.
    """
    n, k = wait_min.shape
    office = np.zeros(k, dtype=bool)
    office[[S_WORK, S_WORK_ESC, S_APPREQ, S_APPGR, S_SOL, S_WK1, S_SOL1, S_WK2, S_SOL2, S_RESOLVED]] = True
    i_l1 = TEAM_NAMES.index(L1)
    # Days to the next working day's opening: before opening on a weekday 0, after closing Mon-Thu 1, Fri 3, ...
    after_close = np.array([1, 1, 1, 1, 3, 2, 1])
    before_open = np.array([0, 0, 0, 0, 0, 2, 1])
    t = arrival_min.copy()
    out = np.empty((n, k))
    for s in range(k):
        t = t + wait_min[:, s]
        if office[s]:
            day = np.floor(t / 1440.0)
            wd = (start_weekday + day.astype(np.int64)) % 7
            minute = t - day * 1440.0
            open_now = (wd < 5) & (minute >= 480.0) & (minute < 1080.0)
            add_days = np.where(minute < 480.0, before_open[wd], after_close[wd])
            pickup = np.exp(np.log(20.0) + 0.8 * rng.standard_normal(n))
            moved = (day + add_days) * 1440.0 + 480.0 + pickup
            t = np.where(mask[:, s] & ~open_now & (team[:, s] != i_l1), moved, t)
        out[:, s] = t
    return out - arrival_min[:, None]


@dataclass
class _AgentSteps:
    """Which planted agent steps each case took, and their combined effect factors."""

    names: tuple[str, ...]  # every step label, intent by intent, in article order
    taken: np.ndarray  # (n, len(names)) bool
    position: np.ndarray  # (n, len(names)) order of the step among the case's steps
    per_case: np.ndarray  # (n,) steps taken
    hours_factor: np.ndarray  # (n,) product of the taken steps' hours factors
    reopen_factor: np.ndarray  # (n,) product of the taken steps' reopen factors
    keep_rework_u: np.ndarray  # (n,) uniform: a rework loop survives when below reopen_factor


def _draw_agent_steps(rng: np.random.Generator, intent: np.ndarray, eligible: np.ndarray) -> _AgentSteps:
    """Each eligible case takes each of its intent's planted steps independently with the step's share."""
    n = len(intent)
    names: list[str] = []
    owner: list[int] = []
    specs = []
    for i, spec in enumerate(INTENTS):
        for st in AGENT_STEPS.get(spec.name, ()):
            names.append(st.activity)
            owner.append(i)
            specs.append(st)
    u = rng.random((n, len(names)))
    share = np.array([st.share for st in specs])
    taken = eligible[:, None] & (intent[:, None] == np.array(owner)[None, :]) & (u < share[None, :])
    position = np.cumsum(taken, axis=1) - 1
    hf = np.where(taken, np.array([st.hours_factor for st in specs])[None, :], 1.0).prod(axis=1)
    rf = np.where(taken, np.array([st.reopen_factor for st in specs])[None, :], 1.0).prod(axis=1)
    return _AgentSteps(names=tuple(names), taken=taken, position=position, per_case=taken.sum(axis=1),
                       hours_factor=hf, reopen_factor=rf, keep_rework_u=rng.random(n))


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1)


def _str(values: np.ndarray | list[str | None]) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object), dtype="str")


def _str_codes(codes: np.ndarray, categories: list[str] | tuple[str, ...] | np.ndarray) -> pd.Series:
    """A pandas "str" column from integer codes into `categories` (negative code = missing), built in arrow."""
    idx = pa.array(np.asarray(codes, dtype=np.int32), mask=np.asarray(codes) < 0)
    arr = pa.DictionaryArray.from_arrays(idx, pa.array([str(c) for c in categories])).cast(pa.large_string())
    return pd.Series(pd.array(arr, dtype="str"))


def _utc(seconds: np.ndarray, t0: pd.Timestamp) -> pd.Series:
    ns = t0.value + np.asarray(seconds, dtype=np.int64) * 1_000_000_000
    return pd.Series(pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC"))


def _check_args(n_cases: int, weeks: int, start: str) -> pd.Timestamp:
    if not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise InvalidInput(f"n_cases must be a positive integer, got {n_cases!r}", field="n_cases")
    if not isinstance(weeks, (int, np.integer)) or weeks < 2:
        raise InvalidInput(f"weeks must be an integer >= 2 (the last week carries the drift), got {weeks!r}",
                           field="weeks")
    try:
        t0 = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"start {start!r} is not a date", field="start") from exc
    return t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")


def simulate(
    *,
    n_cases: int,
    seed: int = 7,
    start: str = "2026-01-05",
    weeks: int = 12,
    config: SimConfig | None = None,
) -> Simulation:
    """Generate a deterministic multi-channel support log with planted patterns and their exact ground truth."""
    cfg = config or SimConfig()
    cfg.validate()
    t0 = _check_args(n_cases, weeks, start)
    n = int(n_cases)
    rng = np.random.default_rng(seed)
    team_idx = {t: i for i, t in enumerate(TEAM_NAMES)}
    n_teams = len(TEAM_NAMES)
    i_l1, i_appr = team_idx[L1], team_idx[APPROVALS]

    # --- arrivals (sorted, so case ids follow creation time) ---
    n_days = weeks * 7
    day_w = WEEKDAY_WEIGHTS[(t0.weekday() + np.arange(n_days)) % 7]
    day = rng.choice(n_days, size=n, p=day_w / day_w.sum())
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    arrival_min = np.sort(day * 1440.0 + hour * 60.0 + rng.random(n) * 60.0)

    # --- case attributes ---
    intent_w = np.array([i.weight for i in INTENTS])
    intent = rng.choice(len(INTENTS), size=n, p=intent_w / intent_w.sum())
    ch_probs = np.array([i.channels for i in INTENTS])[intent]
    channel = _choice_rows(rng, ch_probs)
    segment = rng.choice(len(SEGMENTS), size=n, p=np.array(SEGMENT_WEIGHTS) / sum(SEGMENT_WEIGHTS))
    priority = _choice_rows(rng, np.array(PRIORITY_BY_SEGMENT)[segment])
    max_p = max(len(i.products) for i in INTENTS)
    prod_table = np.array([[PRODUCTS.index(p) for p in (*i.products, *([i.products[0]] * (max_p - len(i.products))))]
                           for i in INTENTS])
    prod_len = np.array([len(i.products) for i in INTENTS])
    prod_pick = (rng.random(n) * prod_len[intent]).astype(int)
    product = prod_table[intent, prod_pick]

    home = np.array([team_idx[i.team] for i in INTENTS])[intent]
    confuser_intent = np.array([[x.name for x in INTENTS].index(i.confuser) for i in INTENTS])[intent]
    confuser_team = np.array([team_idx[i.team] for i in INTENTS])[confuser_intent]

    # --- (1) misrouting, driven by borrowed wording ---
    ambiguous = rng.random(n) < cfg.ambiguous_share
    u_mis = rng.random(n)
    misrouted = np.where(ambiguous, u_mis < cfg.misroute_if_ambiguous, u_mis < cfg.misroute_base)
    work_teams = np.array([i for i, t in enumerate(TEAM_NAMES) if t != APPROVALS])
    # A random wrong team for clear tickets: skip over the home team in the list of work teams.
    k = (rng.random(n) * (len(work_teams) - 1)).astype(int)
    home_pos = np.searchsorted(work_teams, home)
    random_wrong = work_teams[np.where(k >= home_pos, k + 1, k)]
    first_team = np.where(misrouted, np.where(ambiguous, confuser_team, random_wrong), home)

    # --- (2) ping-pong ---
    ta, tb = team_idx[cfg.pingpong_pair[0]], team_idx[cfg.pingpong_pair[1]]
    eligible_pp = ~misrouted & ((home == ta) | (home == tb))
    pingpong = eligible_pp & (rng.random(n) < cfg.pingpong_share)
    pp_other = np.where(home == ta, tb, ta)

    # --- (3) push-to-front and legitimate escalations ---
    push_target = np.array([team_idx[PUSH_TARGET[i.name]] if i.name in PUSH_TARGET else NO_TEAM for i in INTENTS])
    push = ~misrouted & (home == i_l1) & (push_target[intent] != NO_TEAM) & (rng.random(n) < cfg.push_to_front_share)
    esc_target = np.array([team_idx[i.escalate_to] if i.escalate_to else NO_TEAM for i in INTENTS])[intent]
    esc_share = np.array([i.escalate_share for i in INTENTS])[intent]
    legit_esc = ~misrouted & ~push & (esc_target != NO_TEAM) & (rng.random(n) < esc_share)
    final = np.where(push, push_target[intent], np.where(legit_esc, esc_target, home))

    # --- policy deviations, rework, approvals, waits, drift, transfers ---
    skip_triage = rng.random(n) < cfg.skip_triage_share
    close_early = ~push & (rng.random(n) < cfg.close_early_share)
    approval = np.array([i.approval for i in INTENTS])[intent] & ~close_early
    # The knowledge-gap intent also needs more questions to the customer and more failed solutions.
    kg_intent = [i.name for i in INTENTS].index(cfg.knowledge_gap_intent)
    kg = intent == kg_intent
    kg_mult = np.where(kg, 2.0, 1.0)
    rework = ~push & ~close_early & (rng.random(n) < cfg.rework_share * kg_mult)
    rework2 = rework & (rng.random(n) < cfg.second_loop_share)
    wait = ~push & (rng.random(n) < np.minimum(cfg.wait_customer_share * kg_mult, 1.0))
    # Planted agent steps come from a generator of their own, so every other draw of the seed stays the same.
    # Every case reaches "Work started", so every case may take its intent's steps: who takes one is chance alone.
    steps = _draw_agent_steps(np.random.default_rng([int(seed), 0x57E9]), intent, np.ones(n, dtype=bool)) \
        if cfg.agent_steps else None
    if steps is not None:
        rework = rework & (steps.keep_rework_u < steps.reopen_factor)
        rework2 = rework2 & rework
    ch_portal, ch_chat = CHANNELS.index("portal"), CHANNELS.index("chat")
    self_service = (channel == ch_portal) & (rng.random(n) < cfg.self_service_share)
    last_week = arrival_min >= (weeks - 1) * 7 * 1440.0
    drift = last_week & (channel == ch_chat) & (rng.random(n) < cfg.drift_share)
    transfer = ((channel == ch_chat) | (channel == ch_portal)) & (rng.random(n) < cfg.transfer_share)
    transfer_to = np.where(channel == ch_chat, CHANNELS.index("phone"), CHANNELS.index("email"))

    # --- the slot mask ---
    mask = np.zeros((n, N_SLOTS), dtype=bool)
    for s in (S_CREATED, S_ASSIGN, S_WORK, S_SOL, S_RESOLVED, S_CLOSED):
        mask[:, s] = True
    mask[:, S_SELF] = self_service
    mask[:, S_BOT] = drift
    mask[:, S_TRIAGE] = ~skip_triage
    mask[:, S_RE1] = misrouted | pingpong
    mask[:, S_RE2] = pingpong
    mask[:, S_ESC] = push | legit_esc
    mask[:, S_WORK_ESC] = legit_esc
    mask[:, S_WAIT] = wait
    mask[:, S_REPLY] = wait
    mask[:, S_APPREQ] = approval
    mask[:, S_APPGR] = approval
    mask[:, S_RO1] = mask[:, S_WK1] = mask[:, S_SOL1] = rework
    mask[:, S_RO2] = mask[:, S_WK2] = mask[:, S_SOL2] = rework2
    # Closing without a solution drops everything between the work and the close.
    for s in (S_SOL, S_RESOLVED):
        mask[:, s] &= ~close_early

    # --- team per slot (the team holding the ticket after the event) ---
    team = np.empty((n, N_SLOTS), dtype=np.int16)
    team[:, :S_ASSIGN] = i_l1
    team[:, S_SELF] = NO_TEAM
    team[:, S_ASSIGN] = np.where(pingpong, home, first_team)
    team[:, S_RE1] = np.where(pingpong, pp_other, home)
    team[:, S_RE2] = home
    team[:, S_WORK] = home
    team[:, S_ESC:] = final[:, None]
    team[:, S_APPGR] = i_appr

    # --- waits (minutes) ---
    sig = WAIT_SIGMA[None, :]
    wait_min = np.exp(np.log(np.maximum(WAIT_MEDIAN_MIN, 1e-3))[None, :] + sig * rng.standard_normal((n, N_SLOTS)))
    wait_min[:, S_TRIAGE] *= TRIAGE_CHANNEL_FACTOR[channel]
    pf = np.array(PRIORITY_WAIT_FACTOR)[priority]
    for s in QUEUE_SLOTS:
        wait_min[:, s] *= pf
    for s in WORK_SLOTS:
        wait_min[kg, s] *= cfg.knowledge_gap_factor
    if steps is not None:
        for s in WORK_SLOTS:
            if s > S_WORK:
                wait_min[:, s] *= steps.hours_factor
    approval_wait = np.exp(np.log(cfg.approval_median_hours * 60.0) + cfg.approval_sigma * rng.standard_normal(n))
    wait_min[:, S_APPGR] = approval_wait
    n_push = int(push.sum())
    wait_min[push, S_SOL] = np.exp(np.log(PUSH_SOLUTION_MEDIAN_MIN) + 0.5 * rng.standard_normal(n_push))
    wait_min[push, S_ESC] = np.exp(np.log(PUSH_ESCALATE_MEDIAN_MIN) + 0.8 * rng.standard_normal(n_push))
    wait_min = np.maximum(wait_min, 1.0 / 60.0)  # at least a second between events
    # The first event of a case starts the clock.
    first_slot = np.where(self_service, S_SELF, S_CREATED)
    wait_min[np.arange(n), first_slot] = 0.0
    wait_min[:, S_SELF] = 0.0
    wait_min *= mask
    if cfg.business_hours:
        offset_min = _business_hours(rng, arrival_min, wait_min, mask, team, t0.weekday())
        # The waits the events really show (moved into office hours), for the truth figures.
        wait_min = np.diff(offset_min, axis=1, prepend=0.0) * mask
    else:
        offset_min = np.cumsum(wait_min, axis=1)

    # --- flatten to events ---
    rows, cols = np.nonzero(mask)
    ts_sec = np.round((arrival_min[rows] + offset_min[rows, cols]) * 60.0).astype(np.int64)
    ts = _utc(ts_sec, t0)

    width = max(6, len(str(n)))
    case_names = np.array([f"{cfg.case_prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)

    # Agents: each case keeps one agent per team (so hand-overs between agents are team changes).
    team_size = np.array([t.n_agents for t in TEAMS])
    team_offset = np.concatenate([[0], np.cumsum(team_size)[:-1]])
    agent_names = np.array([f"agent_{i:03d}" for i in range(1, int(team_size.sum()) + 1)], dtype=object)
    case_key = rng.integers(0, 1 << 30, size=n)
    ev_team = team[rows, cols].astype(np.int64)
    safe_team = np.where(ev_team < 0, 0, ev_team)
    agent = team_offset[safe_team] + (case_key[rows] + 7919 * safe_team) % team_size[safe_team]
    human_slots = np.zeros(N_SLOTS, dtype=bool)
    human_slots[[S_TRIAGE, S_WORK, S_WORK_ESC, S_WAIT, S_APPREQ, S_APPGR, S_SOL, S_WK1, S_SOL1, S_WK2, S_SOL2,
                 S_RESOLVED]] = True
    is_human = human_slots[cols] | ((cols == S_CREATED) & np.isin(channel[rows], [0, 1]))
    agent = np.where(is_human, agent, -1)

    ev_channel = np.where(transfer[rows] & (cols >= S_WORK), transfer_to[rows], channel[rows])
    ev_channel = np.where(cols == S_SELF, ch_portal, ev_channel)
    team_names = np.array(TEAM_NAMES, dtype=object)
    ev_act = SLOT_ACTIVITY_CODE[cols].astype(np.int32)
    activity_names: tuple[str, ...] = ACTIVITY_NAMES
    if steps is not None:
        # Step events sit right after "Work started", in the article's order, by the agent who started the work.
        activity_names = ACTIVITY_NAMES + steps.names
        at_work = np.flatnonzero(cols == S_WORK)
        later = offset_min[rows[at_work]]  # (m, slots)
        nxt = np.where(mask[rows[at_work]] & (np.arange(N_SLOTS)[None, :] > S_WORK), later, np.inf).min(axis=1)
        gap = np.minimum(nxt - offset_min[rows[at_work], S_WORK], 60.0)
        add_rows, add_ts, add_act, add_src = [], [], [], []
        for j in range(len(steps.names)):
            took = steps.taken[rows[at_work], j]
            src = at_work[took]
            frac = (steps.position[rows[src], j] + 1.0) / (steps.per_case[rows[src]] + 1.0) * 0.5
            t = arrival_min[rows[src]] + offset_min[rows[src], S_WORK] + frac * gap[took]
            add_rows.append(rows[src])
            add_ts.append(np.round(t * 60.0).astype(np.int64))
            add_act.append(np.full(len(src), len(ACTIVITY_NAMES) + j, dtype=np.int32))
            add_src.append(src)
        src_all = np.concatenate(add_src)
        rows = np.concatenate([rows, *add_rows])
        ts_sec = np.concatenate([ts_sec, *add_ts])
        ev_act = np.concatenate([ev_act, *add_act])
        agent = np.concatenate([agent, agent[src_all]])
        ev_team = np.concatenate([ev_team, ev_team[src_all]])
        ev_channel = np.concatenate([ev_channel, ev_channel[src_all]])
        order = np.lexsort((np.arange(len(rows)), ts_sec, rows))
        rows, ts_sec, ev_act = rows[order], ts_sec[order], ev_act[order]
        agent, ev_team, ev_channel = agent[order], ev_team[order], ev_channel[order]
        ts = _utc(ts_sec, t0)

    intent_names = np.array([i.name for i in INTENTS], dtype=object)
    df = pd.DataFrame(
        {
            CASE_ID: _str_codes(rows, case_names),
            ACTIVITY: _str_codes(ev_act, activity_names),
            TIMESTAMP: ts,
            RESOURCE: _str_codes(agent, agent_names),
            GROUP: _str_codes(ev_team, TEAM_NAMES),
            CHANNEL: _str_codes(ev_channel, CHANNELS),
            LIFECYCLE: _str_codes(np.zeros(len(rows), dtype=np.int32), ["complete"]),
            "intent": _str_codes(intent[rows], intent_names),
            "segment": _str_codes(segment[rows], SEGMENTS),
            "priority": _str_codes(priority[rows], PRIORITIES),
            "product": _str_codes(product[rows], PRODUCTS),
        }
    )
    log = EventLog(df, name=f"simulated(seed={seed}, cases={n})",
                   case_attributes=["intent", "segment", "priority", "product"])

    # --- tickets ---
    resolve_team = np.where(close_early, final, team[:, S_RESOLVED])
    created_sec = np.round((arrival_min + offset_min[:, S_CREATED]) * 60.0).astype(np.int64)
    cue = np.where(ambiguous, confuser_intent, -1)
    if cfg.ticket_text:
        # Drawn last, so switching text off leaves the event log of a seed unchanged.
        draws = rng.random((n, N_DRAWS))
        subjects, bodies, has_typo, has_pii, vague = render_tickets(
            intents=intent_names[intent].tolist(),
            cue_intents=[intent_names[c] if c >= 0 else None for c in cue],
            products=[PRODUCTS[p] for p in product],
            draws=draws,
            typo_share=cfg.typo_share,
            pii_share=cfg.pii_share,
            vague_share=cfg.vague_share,
            family_share=cfg.family_share,
        )
    else:
        subjects = bodies = [""] * n
        has_typo, has_pii, vague = (np.zeros(n, dtype=bool) for _ in range(3))
    tickets = pd.DataFrame(
        {
            CASE_ID: _str(case_names),
            "created_at": _utc(created_sec, t0),
            "subject": _str(np.array(subjects, dtype=object)),
            "body": _str(np.array(bodies, dtype=object)),
            "intent": _str(intent_names[intent]),
            CHANNEL: _str(np.array(CHANNELS, dtype=object)[channel]),
            "segment": _str(np.array(SEGMENTS, dtype=object)[segment]),
            "priority": _str(np.array(PRIORITIES, dtype=object)[priority]),
            "product": _str_codes(product, PRODUCTS),
            "first_team": _str_codes(team[:, S_ASSIGN], TEAM_NAMES),
            "resolving_team": _str_codes(resolve_team, TEAM_NAMES),
        }
    )
    if cfg.ticket_fields and cfg.ticket_text:
        customer, orders = ticket_fields(draws, subjects, bodies)
        tickets["customer_name"] = _str(np.array(customer, dtype=object))
        tickets["order_id"] = _str(np.array(orders, dtype=object))

    # --- per-case truth table ---
    deviation = np.full(n, "", dtype=object)
    deviation[skip_triage] = "skipped_triage"
    deviation[close_early] = "closed_without_solution"
    deviation[skip_triage & close_early] = "skipped_triage+closed_without_solution"
    throughput_h = offset_min[:, -1] / 60.0
    cases = pd.DataFrame(
        {
            CASE_ID: _str(case_names),
            "intent": _str(intent_names[intent]),
            "home_team": _str(team_names[home]),
            "first_team": _str(team_names[team[:, S_ASSIGN]]),
            "resolving_team": _str(team_names[resolve_team]),
            "ambiguous_text": ambiguous,
            "cue_intent": pd.Series([intent_names[c] if c >= 0 else None for c in cue], dtype="str"),
            "misrouted": misrouted,
            "ping_pong": pingpong,
            "escalated": push | legit_esc,
            "push_to_front": push,
            "rework_loops": rework.astype(np.int8) + rework2.astype(np.int8),
            "deviation": _str(deviation),
            "approval": approval,
            "drift": drift,
            "channel_transfer": transfer,
            "vague_text": vague,
            "has_typo": has_typo,
            "has_pii": has_pii,
            "throughput_hours": throughput_h,
        }
    )

    truth = _truth(
        cfg=cfg, seed=seed, t0=t0, weeks=weeks, n_events=len(rows), names=case_names, intent=intent, home=home,
        misrouted=misrouted, ambiguous=ambiguous, pingpong=pingpong, push=push, legit_esc=legit_esc,
        rework=rework, rework2=rework2, skip_triage=skip_triage, close_early=close_early, approval=approval,
        wait_min=wait_min, mask=mask, kg=kg, throughput_h=throughput_h, drift=drift, last_week=last_week,
        channel=channel, transfer=transfer, team_offset=team_offset, team_size=team_size,
        agent_names=agent_names, n_teams=n_teams, first_assigned=team[:, S_ASSIGN],
    )
    if steps is not None:
        truth.agent_steps = _step_truth(steps, names=case_names, intent=intent, throughput_h=throughput_h,
                                        rework=rework)
        cases["agent_steps"] = ["; ".join(np.array(steps.names, dtype=object)[row].tolist()) for row in steps.taken]
    return Simulation(log=log, tickets=tickets, truth=truth, cases=cases)


def _step_truth(steps: _AgentSteps, *, names: np.ndarray, intent: np.ndarray, throughput_h: np.ndarray,
                rework: np.ndarray) -> StepEffectTruth:
    """The planted steps per intent with their factors, and what this log measured for each."""
    per_intent: dict[str, list[dict[str, object]]] = {}
    j = 0
    for i, spec in enumerate(INTENTS):
        rows = []
        for st in AGENT_STEPS.get(spec.name, ()):
            took = steps.taken[:, j]
            mine = intent == i
            rest = mine & ~took
            rows.append({
                "activity": st.activity, "share": st.share, "hours_factor": st.hours_factor,
                "reopen_factor": st.reopen_factor, "planted_benefit": round(planted_benefit(st), 4),
                "article_step": st.article_step, "cases": int(took.sum()),
                "mean_hours_with": float(throughput_h[took].mean()) if took.any() else None,
                "mean_hours_without": float(throughput_h[rest].mean()) if rest.any() else None,
                "rework_rate_with": float(rework[took].mean()) if took.any() else None,
                "rework_rate_without": float(rework[rest].mean()) if rest.any() else None,
            })
            j += 1
        if rows:
            per_intent[spec.name] = rows
    return StepEffectTruth(decision_point="Work started", steps=per_intent,
                           best={k: best_step(k) for k in per_intent},
                           cases={a: names[steps.taken[:, k]].tolist() for k, a in enumerate(steps.names)})


def _share(flag: np.ndarray, of: np.ndarray | None = None) -> float:
    denom = int(flag.size if of is None else of.sum())
    return float((flag if of is None else flag & of).sum() / denom) if denom else 0.0


def _truth(*, cfg: SimConfig, seed: int, t0: pd.Timestamp, weeks: int, n_events: int, names: np.ndarray,
           intent: np.ndarray, home: np.ndarray, misrouted: np.ndarray, ambiguous: np.ndarray,
           pingpong: np.ndarray, push: np.ndarray, legit_esc: np.ndarray, rework: np.ndarray,
           rework2: np.ndarray, skip_triage: np.ndarray, close_early: np.ndarray, approval: np.ndarray,
           wait_min: np.ndarray, mask: np.ndarray, kg: np.ndarray, throughput_h: np.ndarray, drift: np.ndarray,
           last_week: np.ndarray, channel: np.ndarray, transfer: np.ndarray, team_offset: np.ndarray,
           team_size: np.ndarray, agent_names: np.ndarray, n_teams: int,
           first_assigned: np.ndarray) -> GroundTruth:
    def ids(flag: np.ndarray) -> list[str]:
        return names[flag].tolist()

    lines = {t: (t.rsplit(" ", 1)[-1] if t.rsplit(" ", 1)[-1] in ("L1", "L2", "L3") else "") for t in TEAM_NAMES}
    agents = {t.name: agent_names[team_offset[i]: team_offset[i] + team_size[i]].tolist()
              for i, t in enumerate(TEAMS)}
    i_l1 = TEAM_NAMES.index(L1)

    # Median wait before each activity over all events of that activity (hours).
    by_act: dict[str, list[np.ndarray]] = {}
    for s, (act, _) in enumerate(SLOTS):
        if s in (S_SELF,):
            continue
        sel = mask[:, s] & (wait_min[:, s] > 0)
        by_act.setdefault(act, []).append(wait_min[sel, s])
    median_by_act = {a: round(float(np.median(np.concatenate(v))) / 60.0, 4)
                     for a, v in by_act.items() if sum(len(x) for x in v)}
    appr_waits = wait_min[approval, S_APPGR]

    kg_team = int(home[kg][0]) if kg.any() else int(
        TEAM_NAMES.index(next(i.team for i in INTENTS if i.name == cfg.knowledge_gap_intent)))
    peers = (home == kg_team) & ~kg
    # None (not NaN) when a tiny log lacks the intent or its peers, so truth.json stays strict JSON.
    ratio = (float(np.median(throughput_h[kg]) / np.median(throughput_h[peers]))
             if kg.any() and peers.any() else None)

    could_stay = push  # planted: escalated without need and solved there by a quick proposal
    week_start = (t0 + pd.Timedelta(days=(weeks - 1) * 7)).date().isoformat()
    dev_any = skip_triage | close_early
    loops = {str(c): int(1 + r2) for c, r2 in zip(names[rework], rework2[rework], strict=True)}
    return GroundTruth(
        seed=int(seed),
        n_cases=int(len(names)),
        n_events=int(n_events),
        start=t0.date().isoformat(),
        weeks=int(weeks),
        teams=lines,
        agents=agents,
        intent_teams={i.name: i.team for i in INTENTS},
        misrouting=MisroutingTruth(
            cases=ids(misrouted),
            share=_share(misrouted),
            ambiguous_cases=ids(misrouted & ambiguous),
            ambiguous_share=_share(ambiguous),
            misroute_rate_if_ambiguous=_share(misrouted, ambiguous),
            misroute_rate_if_clear=_share(misrouted, ~ambiguous),
            reassigned_cases=ids(misrouted | pingpong),
        ),
        ping_pong=PingPongTruth(team_a=cfg.pingpong_pair[0], team_b=cfg.pingpong_pair[1], cases=ids(pingpong),
                                share=_share(pingpong)),
        push_to_front=PushToFrontTruth(
            escalated_cases=ids((push | legit_esc) & (home == i_l1)),
            could_have_stayed=ids(could_stay),
            share_of_l1_cases=_share(could_stay, first_assigned == i_l1),
            trivial_step=TRIVIAL_STEP,
        ),
        slow_step=SlowStepTruth(
            activity=SLOTS[S_APPGR][0],
            after=SLOTS[S_APPREQ][0],
            median_wait_hours=float(np.median(appr_waits) / 60.0) if appr_waits.size else None,
            cases=ids(approval),
            median_wait_by_activity_hours=median_by_act,
        ),
        rework=ReworkTruth(cases=ids(rework), share=_share(rework), loops=loops),
        deviations=DeviationTruth(
            intended_journey=_intended_journey(),
            allowed_transitions=[list(p) for p in sorted(allowed_transitions())],
            cases={"skipped_triage": ids(skip_triage), "closed_without_solution": ids(close_early)},
            all_cases=ids(dev_any),
            share=_share(dev_any),
        ),
        knowledge_gap=KnowledgeGapTruth(intent=cfg.knowledge_gap_intent, planted_factor=float(cfg.knowledge_gap_factor),
                                        team=TEAM_NAMES[kg_team], measured_throughput_ratio=ratio),
        drift=DriftTruth(activity=SLOTS[S_BOT][0], week_index=int(weeks - 1), week_start=week_start,
                         cases=ids(drift), share_of_week=_share(drift, last_week)),
        channel_transfers=ids(transfer),
    )


def simulate_events(
    *,
    n_events: int,
    seed: int = 7,
    start: str = "2026-01-05",
    weeks: int = 12,
    config: SimConfig | None = None,
) -> Simulation:
    """A simulation sized to roughly `n_events` events (case count estimated from a small pilot run)."""
    if not isinstance(n_events, (int, np.integer)) or n_events < 1:
        raise InvalidInput(f"n_events must be a positive integer, got {n_events!r}", field="n_events")
    pilot = simulate(n_cases=2000, seed=seed, start=start, weeks=weeks, config=config)
    per_case = pilot.log.n_events / 2000
    n_cases = max(1, math.ceil(n_events / per_case))
    return simulate(n_cases=n_cases, seed=seed, start=start, weeks=weeks, config=config)
