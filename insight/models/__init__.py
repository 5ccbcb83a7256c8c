"""deskpilot models: the registry, next-activity, remaining-time, resolving-team router and baselines."""

from insight.models.intent import IntentClassifier, IntentPrediction, LabelScore, OOSCalibration
from insight.models.next_activity import NextActivityMetrics, NextActivityPredictor
from insight.models.ngram import NGramBackoff
from insight.models.prefix_features import END, PrefixEncoder, PrefixSet
from insight.models.registry import ArtifactMetadata, ArtifactRef, LoadedArtifact, ModelRegistry
from insight.models.remaining_time import RemainingTimeMetrics, RemainingTimePredictor
from insight.models.router import RouterMetrics, RoutingImpact, TeamRouter, TeamScore, routing_impact
from insight.models.split import split_log, time_ordered_case_split

__all__ = [
    "END", "ArtifactMetadata", "ArtifactRef", "LoadedArtifact", "ModelRegistry", "NGramBackoff",
    "NextActivityMetrics", "NextActivityPredictor", "PrefixEncoder", "PrefixSet", "RemainingTimeMetrics",
    "RemainingTimePredictor", "RouterMetrics", "RoutingImpact", "TeamRouter", "TeamScore", "routing_impact",
    "split_log", "time_ordered_case_split",
]
__all__ += ["IntentClassifier", "IntentPrediction", "LabelScore", "OOSCalibration"]
