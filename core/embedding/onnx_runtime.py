"""What the ONNX backend needs to run a model: a supported architecture, its text settings, the fast tokenizer,
the cached file's name and an onnxruntime session."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from core.embedding.int8 import INT8_RECIPE_VERSION
from core.embedding.onnx_export import ONNX_EXPORT_VERSION, ONNX_OPSET
from core.errors import ModelArtifactError


def check_onnx_architecture(model_path: Path) -> None:
    """The exported graph is transformer + mean pooling + normalisation; refuse models that are anything else."""
    try:
        modules = json.loads((model_path / "modules.json").read_text())
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((model_path / pooling_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        raise ModelArtifactError(
            f"the onnx embedding backend cannot read the module list of {model_path} "
            f"({type(e).__name__}: {e}); use DESKPILOT_EMBEDDING_BACKEND=torch for this model"
        ) from e
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
    if types[:2] != ["Transformer", "Pooling"] or types[2:] not in ([], ["Normalize"]) \
            or modes != ["pooling_mode_mean_tokens"]:
        raise ModelArtifactError(
            f"the onnx embedding backend supports Transformer + mean Pooling (+ Normalize) models; "
            f"{model_path} has modules {types} and pooling {modes}; use DESKPILOT_EMBEDDING_BACKEND=torch"
        )


def text_settings(model_path: Path) -> tuple[int, bool]:
    """(max_seq_length, do_lower_case) from sentence_bert_config.json, as sentence-transformers applies them."""
    p = model_path / "sentence_bert_config.json"
    try:
        cfg = json.loads(p.read_text())
        return int(cfg["max_seq_length"]), bool(cfg.get("do_lower_case", False))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelArtifactError(
            f"the onnx embedding backend needs max_seq_length in {p} ({type(e).__name__}: {e}); "
            "use DESKPILOT_EMBEDDING_BACKEND=torch for this model"
        ) from e


def load_tokenizer(model_path: Path, max_len: int) -> Any:
    """The model's fast tokenizer (`tokenizer.json`), truncating at `max_len`, unpadded (runs pad themselves)."""
    tok_file = model_path / "tokenizer.json"
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_file))
    except Exception as e:
        raise ModelArtifactError(
            f"the onnx embedding backend cannot read the fast tokenizer {tok_file} ({type(e).__name__}: {e}); "
            "use DESKPILOT_EMBEDDING_BACKEND=torch for this model"
        ) from e
    tok.enable_truncation(max_len)
    tok.no_padding()  # batches are padded here, after sorting by token count
    return tok


def cached_onnx_path(cache_dir: Path, model_path: Path, *, model_fingerprint: str, weight_files: list[Path],
                     quantize: str) -> Path:
    """File an export is cached in: keyed by the model fingerprint, the weight files' size and modification time,
    the export recipe and (int8) the quantization recipe."""
    h = hashlib.sha256(model_fingerprint.encode())
    for w in weight_files:
        st = w.stat()
        h.update(json.dumps([w.name, st.st_size, st.st_mtime_ns]).encode())
    h.update(f"export-v{ONNX_EXPORT_VERSION}-opset{ONNX_OPSET}".encode())
    suffix = ""
    if quantize != "none":
        h.update(f"{quantize}-v{INT8_RECIPE_VERSION}".encode())
        suffix = f"-{quantize}"
    return cache_dir / f"{model_path.name}-{h.hexdigest()[:20]}{suffix}.onnx"


def open_session(path: Path, *, threads: int | None) -> Any:
    """An onnxruntime CPU session over `path` (all graph optimisations, non-spinning worker threads)."""
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: right after embedding, the classifier's BLAS and
        # sklearn work needs the same cores (docs/PERFORMANCE.md, "Embedding").
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelArtifactError(
            f"cannot open the ONNX embedding model {path} ({type(e).__name__}: {e}); "
            "delete the file to export it again"
        ) from e
