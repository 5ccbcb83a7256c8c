"""int8 quantization of the float ONNX export: weights per output channel, activations per run (another embedding
function with its own fingerprint; see the package docstring)."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.embedding.onnx_export import write_atomic
from core.embedding.probes import META_KEY
from core.errors import ModelArtifactError

# Bump when the int8 recipe (which nodes, per-channel, weight type) changes: cached files and fingerprints carry it.
INT8_RECIPE_VERSION = 1
# Matrix multiplications kept in float in the int8 model: the first layer's feed-forward output projection, whose
# input (after GELU) quantizes worst: quantizing it alone costs the most cosine to the float vectors of any layer's
# projection, and keeping it float costs no measurable speed (docs/PERFORMANCE.md, "Embedding"; the accuracy and
# throughput of both are in bench/predictors_intent.py).
_INT8_KEEP_FLOAT = re.compile(r"layer\.0/output/dense/MatMul$")


def quantize_int8(src: Path, path: Path, *, quantize: str) -> None:
    """Quantize the float export `src` to `path` (atomic): int8 weights per output channel, activations per
    batch at run time, every weight MatMul but `_INT8_KEEP_FLOAT`; the attention products stay float."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = onnx.load(str(src))
        keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and _INT8_KEEP_FLOAT.search(n.name)]
        with tempfile.TemporaryDirectory(prefix="deskpilot-int8-") as tmpdir, warnings.catch_warnings(), \
                _quiet_root_logger():
            warnings.simplefilter("ignore")  # onnxruntime's advice to pre-process; the probes check the result
            out = Path(tmpdir) / "model.onnx"
            quantize_dynamic(src, out, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True}, nodes_to_exclude=keep)
            proto = onnx.load(str(out))
        # The float file's metadata (torch probe embeddings) carries over; the probes check the int8 result.
        meta = {p.key: p.value for p in proto.metadata_props}
        info = json.loads(meta[META_KEY])
        info.update({"quantize": quantize, "int8_recipe": INT8_RECIPE_VERSION, "kept_float": keep})
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=json.dumps(info) if k == META_KEY else v)
        data = proto.SerializeToString()
    except Exception as e:
        raise ModelArtifactError(
            f"int8 quantization of the ONNX embedding model {src} failed ({type(e).__name__}: {e}); "
            "set DESKPILOT_EMBEDDING_QUANTIZE=none, or delete the file to export it again"
        ) from e
    write_atomic(path, data)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs its advice on the root logger; keep it out of the service's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
