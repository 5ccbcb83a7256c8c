"""Probe texts: embedded by torch when the ONNX file is made and by onnxruntime at every load, compared loudly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelArtifactError

# Largest |onnx - torch| accepted on any probe value: well above the export's real difference, which is the size of
# torch's own difference between embedding a text alone and inside a padded batch (docs/PERFORMANCE.md).
ONNX_TOLERANCE = 1e-5
# Smallest cosine between an int8 probe embedding and torch's float one accepted at load: below what a sound int8
# file gives on any probe text (the empty one is the lowest), far above what a broken file gives (docs/PERFORMANCE.md).
INT8_MIN_COSINE = 0.95
# Where the export keeps its metadata (torch's probe embeddings, the model fingerprint) inside the ONNX file.
META_KEY = "deskpilot_embedding"
# Support-desk texts of different lengths (one empty, one longer than any max_seq_length), embedded by torch at export
# time and by onnxruntime at every load.
PROBE_TEXTS: tuple[str, ...] = (
    "I was charged twice for the same card payment yesterday, please refund one of them.",
    "How do I reset my password?",
    "",
    "Mi tarjeta no funciona en el extranjero",
    "VPN keeps disconnecting every 5 min since the update!!! ticket #48213",
    "Why is my top-up still pending? It has been 3 days and the money left my bank account already. " * 30,
    "card",
    "Can I change the delivery address of my new card after ordering it? I moved last week.",
)


def reference_embeddings(session: Any, path: Path, *, fingerprint: str, quantize: str) -> np.ndarray:
    """Torch's probe embeddings stored in the ONNX file; refuses a file made from another model or other probes."""
    meta = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    try:
        info = json.loads(meta)
        probes = np.asarray(info["probe_embeddings"], dtype=np.float32)
        ok = info["probe_texts"] == list(PROBE_TEXTS) and info["fingerprint"] == fingerprint \
            and info.get("quantize", "none") == quantize
    except (TypeError, ValueError, KeyError) as e:
        raise ModelArtifactError(
            f"cached ONNX embedding model {path} has no valid deskpilot metadata ({type(e).__name__}: {e}); "
            "delete the file to export it again"
        ) from e
    if not ok:
        raise ModelArtifactError(f"cached ONNX embedding model {path} was exported from another model or "
                                 "with other probes; delete the file to export it again")
    return probes


def check_probes(got: np.ndarray, reference: np.ndarray, path: Path, *, quantize: str, model_name: str) -> None:
    """Refuse an ONNX file whose probe embeddings stray from torch's: beyond ONNX_TOLERANCE for float, below
    INT8_MIN_COSINE for int8."""
    if got.shape != reference.shape:
        raise ModelArtifactError(f"ONNX embedding model {path} gives shape {got.shape}, torch gave "
                                 f"{reference.shape}; delete the file to export it again")
    if quantize == "int8":
        cos = float((got * reference).sum(axis=1).min())
        if not cos >= INT8_MIN_COSINE:
            raise ModelArtifactError(
                f"int8 ONNX embeddings of {model_name} reach a cosine of only {cos:.4f} "
                f"(< {INT8_MIN_COSINE}) to torch's on the probe texts ({path}); delete the file to quantize it "
                "again, or set DESKPILOT_EMBEDDING_QUANTIZE=none"
            )
        return
    diff = float(np.abs(got - reference).max())
    if not diff <= ONNX_TOLERANCE:
        raise ModelArtifactError(
            f"ONNX embeddings of {model_name} differ from torch by {diff:.2e} (> {ONNX_TOLERANCE:g}) "
            f"on the probe texts ({path}); use DESKPILOT_EMBEDDING_BACKEND=torch"
        )
