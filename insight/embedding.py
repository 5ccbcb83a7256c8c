"""Sentence embeddings from a local sentence-transformers model folder (never a hub download)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from insight.errors import ModelArtifactError


class Embedder:
    """Loads a sentence-transformers model from a folder on disk and encodes text to unit vectors."""

    def __init__(self, model_path: str | Path, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            if not (self.model_path / "modules.json").is_file() and not (self.model_path / "config.json").is_file():
                raise ModelArtifactError(
                    f"embedding model folder {self.model_path} holds no sentence-transformers model "
                    "(no modules.json / config.json); set DESKPILOT_EMBEDDING_MODEL to a model folder"
                )
            from sentence_transformers import SentenceTransformer

            # local_files_only: a folder path never reaches a model hub, even if HF_HUB_OFFLINE is unset.
            self._model = SentenceTransformer(
                str(self.model_path), device=self.device, local_files_only=True, trust_remote_code=False
            )
        return self._model

    @property
    def dimension(self) -> int:
        """Embedding size."""
        model = self._load()
        dim = model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else int(self.encode(["x"]).shape[1])

    @property
    def name(self) -> str:
        """Model name (folder name plus a short fingerprint of its config), stored with anything embedded."""
        return f"{self.model_path.name}@{self.fingerprint[:12]}"

    @property
    def fingerprint(self) -> str:
        """Hash of the model's config files: changes when the model changes."""
        h = hashlib.sha256()
        for fname in ("config.json", "modules.json", "sentence_bert_config.json"):
            p = self.model_path / fname
            if p.is_file():
                h.update(p.read_bytes())
        weights = sorted(self.model_path.glob("*.safetensors")) + sorted(self.model_path.glob("*.bin"))
        for w in weights:
            h.update(json.dumps([w.name, w.stat().st_size]).encode())
        return h.hexdigest()

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Encode texts to L2-normalised float32 vectors, shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vecs, dtype=np.float32)
