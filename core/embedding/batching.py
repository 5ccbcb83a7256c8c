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


def plan_runs(encodings: list[Any], *, batch_size: int, token_budget: int) -> list[np.ndarray]:
    """The runs of `encode_in_runs`: row indices of each run, longest texts first, each run as many rows as fit the
    token budget at its own width (at most batch_size, at least one)."""
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    # Longest first, like sentence-transformers: batches of similar length pad little.
    order = np.argsort(-lengths, kind="stable")
    runs = []
    start = 0
    while start < len(encodings):
        # Rows per run: as many as fit the token budget at this chunk's width (its first, longest text), at most
        # batch_size, at least one. See DEFAULT_TOKEN_BUDGET for why small runs are faster.
        rows = max(1, min(batch_size, token_budget // max(1, int(lengths[order[start]]))))
        runs.append(order[start:start + rows])
        start += rows
    return runs


def run_into(session: Any, encodings: list[Any], runs: list[np.ndarray], out: np.ndarray) -> None:
    """Embed each run of `runs` with the session into its rows of `out` (float32, one row per encoding)."""
    names = [i.name for i in session.get_inputs()]
    for idx in runs:
        out[idx] = session.run([ONNX_OUTPUT], feeds([encodings[i] for i in idx], names))[0]


def encode_in_runs(session: Any, encodings: list[Any], *, batch_size: int, token_budget: int,
                   dimension: int | None = None) -> np.ndarray:
    """Embeddings of tokenized texts (rows in input order) from an onnxruntime session, run by token budget."""
    runs = plan_runs(encodings, batch_size=batch_size, token_budget=token_budget)
    if dimension is None:  # the first run tells the width
        names = [i.name for i in session.get_inputs()]
        first = session.run([ONNX_OUTPUT], feeds([encodings[i] for i in runs[0]], names))[0]
        out = np.empty((len(encodings), first.shape[1]), dtype=np.float32)
        out[runs[0]] = first
        runs = runs[1:]
    else:
        out = np.empty((len(encodings), dimension), dtype=np.float32)
    run_into(session, encodings, runs, out)
    return out


def split_runs(encodings: list[Any], runs: list[np.ndarray], parts: int) -> list[list[np.ndarray]]:
    """The runs dealt to `parts` workers, about the same padded tokens (rows x width) each: longest runs first,
    each to the least loaded worker."""
    cost = [len(idx) * max(len(encodings[i].ids) for i in idx) for idx in runs]
    loads = [0] * parts
    out: list[list[np.ndarray]] = [[] for _ in range(parts)]
    for r in sorted(range(len(runs)), key=lambda r: -cost[r]):
        w = loads.index(min(loads))
        out[w].append(runs[r])
        loads[w] += cost[r]
    return [o for o in out if o]
