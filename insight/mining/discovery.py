"""Process-model discovery with pm4py's inductive miner, exported as BPMN and / or PNML."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from insight.eventlog.schema import EventLog


@dataclass
class DiscoveredModel:
    """A discovered process model: the pm4py objects plus where they were written."""

    noise_threshold: float
    n_places: int
    n_transitions: int
    bpmn_path: str | None
    pnml_path: str | None
    petri_net: Any = None
    initial_marking: Any = None
    final_marking: Any = None
    bpmn: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the pm4py objects are left out)."""
        return {
            "algorithm": "inductive miner (pm4py)",
            "noise_threshold": self.noise_threshold,
            "n_places": self.n_places,
            "n_transitions": self.n_transitions,
            "bpmn_path": self.bpmn_path,
            "pnml_path": self.pnml_path,
        }


def discover_model(
    log: EventLog,
    *,
    noise_threshold: float = 0.2,
    bpmn_path: str | Path | None = None,
    pnml_path: str | Path | None = None,
) -> DiscoveredModel:
    """Inductive-miner model of the log (infrequent variant with `noise_threshold`); writes BPMN / PNML if asked."""
    if not 0.0 <= noise_threshold <= 1.0:
        raise InvalidInput("noise_threshold must be in [0, 1]", field="noise_threshold")
    import pm4py

    from insight.eventlog.pm4py_bridge import to_pm4py

    df = to_pm4py(log)
    keys = {"activity_key": "concept:name", "case_id_key": "case:concept:name", "timestamp_key": "time:timestamp"}
    tree = pm4py.discover_process_tree_inductive(df, noise_threshold=noise_threshold, **keys)
    net, im, fm = pm4py.convert_to_petri_net(tree)
    bpmn = pm4py.convert_to_bpmn(tree)
    if bpmn_path is not None:
        Path(bpmn_path).parent.mkdir(parents=True, exist_ok=True)
        # pm4py lays the diagram out with the Graphviz `dot` binary; without it the BPMN keeps its semantics
        # but has no diagram coordinates (BPMN tools then auto-layout on import).
        pm4py.write_bpmn(bpmn, str(bpmn_path), auto_layout=shutil.which("dot") is not None)
    if pnml_path is not None:
        Path(pnml_path).parent.mkdir(parents=True, exist_ok=True)
        pm4py.write_pnml(net, im, fm, str(pnml_path))
    return DiscoveredModel(
        noise_threshold=noise_threshold,
        n_places=len(net.places),
        n_transitions=len(net.transitions),
        bpmn_path=None if bpmn_path is None else str(bpmn_path),
        pnml_path=None if pnml_path is None else str(pnml_path),
        petri_net=net,
        initial_marking=im,
        final_marking=fm,
        bpmn=bpmn,
    )
