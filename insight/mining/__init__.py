"""Process mining for support logs: process map, variants + cost, bottlenecks, handovers, KPIs.

Encode once with `encode(log)` and pass `enc=` to several miners to share the work.
"""

from insight.mining._core import EncodedLog, encode
from insight.mining.handover import HandoverNetwork, handover_network, team_handover_network
from insight.mining.process_map import ProcessMap, discover_process_map, render_svg, to_dot
from insight.mining.variants import CostModel, VariantTable, mine_variants, variant_of_cases

__all__ = [
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
