"""How texts run through the ONNX session: sorted by token count, in runs sized by tokens rather than rows."""

from __future__ import annotations

from typing import Any

import numpy as np

# ONNX runs are sized by tokens, not rows: texts sorted longest first, each run takes as many as fit this many tokens
# at its own width (at most batch_size rows). Attention and the padded activations of a large run leave the CPU
# caches; runs of this size stay in them. Chosen against fixed-row runs and other budgets on Banking77, simulated and
# long real tickets (docs/PERFORMANCE.md, "Embedding").
DEFAULT_TOKEN_BUDGET = 512
ONNX_OUTPUT = "sentence_embedding"


def feeds(encodings: list[Any], names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """Right-padded int64 arrays for one batch of `tokenizers` encodings."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for r, e in enumerate(encodings):
        k = len(e.ids)
        ids[r, :k] = e.ids
        mask[r, :k] = 1
        types[r, :k] = e.type_ids
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: arrays[n] for n in names}


def encode_in_runs(session: Any, encodings: list[Any], *, batch_size: int, token_budget: int) -> np.ndarray:
    """Embeddings of tokenized texts (rows in input order) from an onnxruntime session, run by token budget."""
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    # Longest first, like sentence-transformers: batches of similar length pad little.
    order = np.argsort(-lengths, kind="stable")
    names = [i.name for i in session.get_inputs()]
    out: np.ndarray | None = None
    start = 0
    while start < len(encodings):
        # Rows per run: as many as fit the token budget at this chunk's width (its first, longest text), at most
        # batch_size, at least one. See DEFAULT_TOKEN_BUDGET for why small runs are faster.
        rows = max(1, min(batch_size, token_budget // max(1, int(lengths[order[start]]))))
        idx = order[start:start + rows]
        start += rows
        vecs = session.run([ONNX_OUTPUT], feeds([encodings[i] for i in idx], names))[0]
        if out is None:
            out = np.empty((len(encodings), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
    assert out is not None
    return out
