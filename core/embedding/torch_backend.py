"""The reference backend: sentence-transformers on torch, from a local folder only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ModelArtifactError


def load_sentence_transformer(model_path: Path, *, device: str, threads: int | None) -> Any:
    """The SentenceTransformer in `model_path` (never a hub download); ModelArtifactError naming the folder."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            torch.set_num_threads(threads)
        # local_files_only: a folder path never reaches a model hub, even if HF_HUB_OFFLINE is unset.
        return SentenceTransformer(
            str(model_path), device=device, local_files_only=True, trust_remote_code=False
        )
    except ModelArtifactError:
        raise
    except Exception as e:  # a truncated weight file, a bad config ...: name the folder, keep the cause
        raise ModelArtifactError(
            f"cannot load the embedding model in {model_path}: {type(e).__name__}: {e}"
        ) from e
