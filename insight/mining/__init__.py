"""Process mining for support logs: process map, variants + cost, bottlenecks, handovers, KPIs.

Encode once with `encode(log)` and pass `enc=` to several miners to share the work.
"""

from insight.mining._core import EncodedLog, encode
from insight.mining.bottlenecks import Bottlenecks, find_bottlenecks
from insight.mining.discovery import DiscoveredModel, discover_model
from insight.mining.handover import HandoverNetwork, handover_network, team_handover_network
from insight.mining.kpis import KpiRow, KpiTable, case_kpis, compute_kpis, support_line
from insight.mining.process_map import ProcessMap, discover_process_map, render_svg, to_dot
from insight.mining.variants import CostModel, VariantTable, mine_variants, variant_of_cases

__all__ = [
    "Bottlenecks",
    "DiscoveredModel",
    "KpiRow",
    "KpiTable",
    "case_kpis",
    "compute_kpis",
    "discover_model",
    "find_bottlenecks",
    "support_line",
    "CostModel",
    "EncodedLog",
    "HandoverNetwork",
    "ProcessMap",
    "VariantTable",
    "discover_process_map",
    "encode",
    "handover_network",
    "mine_variants",
    "render_svg",
    "team_handover_network",
    "to_dot",
    "variant_of_cases",
]

# h3b: labels, misrouting, conformance, alerts and the InsightReport (appended; imports kept here on purpose).
from insight.mining.alerts import AlertConfig, AlertReport, detect_alerts  # noqa: E402
from insight.mining.conformance import ConformanceResult, IntendedJourney, check_conformance  # noqa: E402
from insight.mining.labels import (  # noqa: E402
    END_OF_CASE,
    CaseLabels,
    LabelConfig,
    PrefixLabels,
    TrainingLabels,
    case_labels,
    prefix_labels,
    training_labels,
)
from insight.mining.misrouting import MisroutingConfig, MisroutingResult, analyze_misrouting  # noqa: E402
from insight.mining.report import InsightReport, MineConfig, mine  # noqa: E402

__all__ += [
    "END_OF_CASE", "AlertConfig", "AlertReport", "CaseLabels", "ConformanceResult", "InsightReport",
    "IntendedJourney", "LabelConfig", "MineConfig", "MisroutingConfig", "MisroutingResult", "PrefixLabels",
    "TrainingLabels", "analyze_misrouting", "case_labels", "check_conformance", "detect_alerts", "mine",
    "prefix_labels", "training_labels",
]
