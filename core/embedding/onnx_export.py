"""The ONNX export: transformer + mean pooling + L2 normalisation as one graph, with torch's probe embeddings."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from core.embedding.batching import ONNX_OUTPUT, feeds
from core.embedding.probes import META_KEY, PROBE_TEXTS
from core.errors import ModelArtifactError

# Bump when the export recipe (graph, opset, inputs) changes: cached files are keyed by it.
ONNX_EXPORT_VERSION = 1
ONNX_OPSET = 17


def export_onnx(st_model: Any, tokenizer: Any, path: Path, *, fingerprint: str, model_path: Path) -> None:
    """Export transformer + mean pooling + L2 normalisation to `path` (atomic), with torch probe embeddings."""
    try:
        import onnx
        import torch

        reference = np.asarray(
            st_model.encode(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS), normalize_embeddings=True,
                            convert_to_numpy=True), dtype=np.float32)
        graph = _pooled_encoder(st_model[0].auto_model).eval()
        example = feeds(tokenizer.encode_batch(list(PROBE_TEXTS[:2])), ("input_ids", "attention_mask",
                                                                         "token_type_ids"))
        with tempfile.TemporaryDirectory(prefix="deskpilot-onnx-") as tmpdir, warnings.catch_warnings(), \
                torch.no_grad():
            raw = Path(tmpdir) / "model.onnx"
            warnings.simplefilter("ignore")  # tracer and legacy-exporter chatter; the probes check the result
            torch.onnx.export(
                graph, tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask",
                                                                     "token_type_ids")),
                str(raw), input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "token_type_ids": {0: "batch", 1: "tokens"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=ONNX_OPSET, dynamo=False,
            )
            proto = onnx.load(str(raw))
        info = {"fingerprint": fingerprint, "model": model_path.name, "torch": torch.__version__,
                "export_version": ONNX_EXPORT_VERSION, "probe_texts": list(PROBE_TEXTS),
                "probe_embeddings": reference.tolist()}
        proto.metadata_props.add(key=META_KEY, value=json.dumps(info))
        data = proto.SerializeToString()
    except ModelArtifactError:
        raise
    except Exception as e:
        raise ModelArtifactError(
            f"ONNX export of the embedding model {model_path} failed ({type(e).__name__}: {e}); "
            "use DESKPILOT_EMBEDDING_BACKEND=torch"
        ) from e
    write_atomic(path, data)


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename: a concurrent process never opens a half-written model file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise ModelArtifactError(
            f"cannot write the ONNX embedding model to {path} ({e}); set DESKPILOT_EMBEDDING_CACHE to a writable folder"
        ) from e


def _pooled_encoder(transformer: Any) -> Any:
    """Torch module: transformer + attention-masked mean pooling + L2 normalisation (what sentence-transformers
    computes), built lazily so the onnx backend imports torch only to export."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return PooledEncoder()
