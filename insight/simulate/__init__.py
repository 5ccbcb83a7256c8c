"""Deterministic contact-center simulator: a multi-channel support log, its tickets and the planted ground truth."""

from insight.simulate.config import INTENTS, TEAMS, IntentSpec, SimConfig, Team
from insight.simulate.engine import SLOTS, Simulation, allowed_transitions, simulate, simulate_events
from insight.simulate.truth import GroundTruth

__all__ = [
    "INTENTS",
    "SLOTS",
    "TEAMS",
    "GroundTruth",
    "IntentSpec",
    "SimConfig",
    "Simulation",
    "Team",
    "allowed_transitions",
    "simulate",
    "simulate_events",
]
