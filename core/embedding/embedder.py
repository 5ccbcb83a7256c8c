"""Embedder: a local sentence-transformers model that encodes text to unit vectors, on torch or ONNX."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from core.cpus import usable_cores
from core.embedding.batching import DEFAULT_TOKEN_BUDGET, encode_in_runs, plan_runs, run_into, split_runs
from core.embedding.int8 import INT8_RECIPE_VERSION, quantize_int8
from core.embedding.onnx_export import export_onnx
from core.embedding.onnx_runtime import (
    cached_onnx_path,
    check_onnx_architecture,
    load_tokenizer,
    open_session,
    text_settings,
)
from core.embedding.probes import PROBE_TEXTS, check_probes, reference_embeddings
from core.embedding.torch_backend import load_sentence_transformer
from core.errors import InvalidInput, ModelArtifactError

EMBEDDING_BACKENDS: tuple[str, ...] = ("torch", "onnx")
EMBEDDING_QUANTIZATIONS: tuple[str, ...] = ("none", "int8")


def default_cache_dir() -> Path:
    """Where exported ONNX models are cached by default: $XDG_CACHE_HOME/deskpilot/embeddings (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deskpilot" / "embeddings"


class Embedder:
    """Loads a sentence-transformers model from a folder on disk and encodes text to unit vectors.

    `backend` is "torch" or "onnx" (see the `core.embedding` docstring); `threads` caps the CPU threads of inference (None:
    the library default; for torch it is `torch.set_num_threads`, which is process-wide); `cache_dir` is where the
    ONNX export is kept (default `default_cache_dir()`); `quantize` is "none" or "int8" (onnx only, see the package
    docstring); `token_budget` caps the tokens of one ONNX run (rows x padded width), `batch_size` its rows. Float
    vectors do not depend on how texts are batched (within 1e-6); int8 runs one text per run (activations are
    quantized per run), so its vectors do not depend on the batch at all.

    On onnx, a call of several runs deals them to `threads` worker threads (None: the usable cores), each with a
    one-thread session, instead of splitting each small run's operators over the cores of one session: on small runs
    the latter spends much of its time handing work between threads. A run's vectors are the same bit for bit on
    either session (checked on the probe texts when the one-thread session opens; otherwise every run stays on the
    main session). One text (one run) keeps the main session and all its threads, for latency.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        backend: str = "torch",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        quantize: str = "none",
        token_budget: int = DEFAULT_TOKEN_BUDGET,
    ) -> None:
        if backend not in EMBEDDING_BACKENDS:
            raise InvalidInput(f"embedding backend must be one of {EMBEDDING_BACKENDS}, got {backend!r}",
                               field="backend")
        if backend == "onnx" and device != "cpu":
            raise InvalidInput(f"the onnx embedding backend runs on cpu only, got device {device!r}", field="device")
        if quantize not in EMBEDDING_QUANTIZATIONS:
            raise InvalidInput(f"embedding quantize must be one of {EMBEDDING_QUANTIZATIONS}, got {quantize!r}",
                               field="quantize")
        if quantize != "none" and backend != "onnx":
            raise InvalidInput(f"embedding quantize={quantize!r} needs the onnx backend, got backend {backend!r}",
                               field="quantize")
        if threads is not None and threads < 1:
            raise InvalidInput(f"embedding threads must be >= 1 (or unset), got {threads}", field="threads")
        if batch_size < 1:
            raise InvalidInput(f"embedding batch_size must be >= 1, got {batch_size}", field="batch_size")
        if token_budget < 1:
            raise InvalidInput(f"embedding token_budget must be >= 1, got {token_budget}", field="token_budget")
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.device = device
        self.backend = backend
        self.threads = threads
        self.quantize = quantize
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._model: Any = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._lowercase = False
        self._dim: int | None = None
        self._lock = threading.Lock()
        # Data-parallel runs (see _encode_onnx): a one-thread session per worker thread, opened on first use.
        self._workers = threads if threads is not None else usable_cores()
        self._single: Any = None
        self._parallel: bool | None = None  # None: not tried yet
        self._pool: ThreadPoolExecutor | None = None
        self._parallel_lock = threading.Lock()

    # ---- identity ----

    @property
    def name(self) -> str:
        """Model name (folder name plus a short fingerprint of its config), stored with anything embedded."""
        suffix = "" if self.quantize == "none" else f"-{self.quantize}"
        return f"{self.model_path.name}{suffix}@{self.fingerprint[:12]}"

    @property
    def fingerprint(self) -> str:
        """Hash of the model's config files and of the quantization: the same for both float backends, another one
        for int8 (its vectors differ by more than any model trained on the float ones should silently accept)."""
        base = self._model_fingerprint()
        if self.quantize == "none":
            return base
        return hashlib.sha256(f"{base}:{self.quantize}-v{INT8_RECIPE_VERSION}".encode()).hexdigest()

    def _model_fingerprint(self) -> str:
        h = hashlib.sha256()
        for fname in ("config.json", "modules.json", "sentence_bert_config.json"):
            p = self.model_path / fname
            if p.is_file():
                h.update(p.read_bytes())
        for w in self._weight_files():
            h.update(json.dumps([w.name, w.stat().st_size]).encode())
        return h.hexdigest()

    def _weight_files(self) -> list[Path]:
        return sorted(self.model_path.glob("*.safetensors")) + sorted(self.model_path.glob("*.bin"))

    @property
    def dimension(self) -> int:
        """Embedding size."""
        self._load()
        if self._dim is None:
            self._dim = int(self.encode(["x"]).shape[1])
        return self._dim

    # ---- loading ----

    def _check_folder(self) -> None:
        if not (self.model_path / "modules.json").is_file() and not (self.model_path / "config.json").is_file():
            raise ModelArtifactError(
                f"embedding model folder {self.model_path} holds no sentence-transformers model "
                "(no modules.json / config.json); set DESKPILOT_EMBEDDING_MODEL to a model folder"
            )

    def _load(self) -> None:
        with self._lock:
            if self._model is not None or self._session is not None:
                return
            self._check_folder()
            if self.backend == "torch":
                self._model = self._load_sentence_transformer()
                get_dim = getattr(self._model, "get_embedding_dimension", None) \
                    or self._model.get_sentence_embedding_dimension
                dim = get_dim()
                self._dim = int(dim) if dim is not None else None
            else:
                self._load_onnx()

    def _load_sentence_transformer(self) -> Any:
        return load_sentence_transformer(self.model_path, device=self.device, threads=self.threads)

    # ---- onnx backend ----

    def onnx_path(self, quantize: str | None = None) -> Path:
        """File the ONNX export of this model is cached in (it may not exist yet); `quantize` defaults to this
        embedder's (the int8 file is made from the float one)."""
        return cached_onnx_path(self.cache_dir, self.model_path, model_fingerprint=self._model_fingerprint(),
                                weight_files=self._weight_files(),
                                quantize=self.quantize if quantize is None else quantize)

    def _load_onnx(self) -> None:
        check_onnx_architecture(self.model_path)
        max_len, self._lowercase = text_settings(self.model_path)
        self._tokenizer = load_tokenizer(self.model_path, max_len)
        path = self.onnx_path()
        if not path.is_file():
            float_path = self.onnx_path("none")
            if not float_path.is_file():
                export_onnx(self._load_sentence_transformer(), self._tokenizer, float_path,
                            fingerprint=self._model_fingerprint(), model_path=self.model_path)
            if self.quantize == "int8":
                quantize_int8(float_path, path, quantize=self.quantize)
        self._session = open_session(path, threads=self.threads)
        probes = reference_embeddings(self._session, path, fingerprint=self._model_fingerprint(),
                                      quantize=self.quantize)
        check_probes(self._encode_onnx(list(PROBE_TEXTS), parallel=False), probes, path, quantize=self.quantize,
                     model_name=self.model_path.name)
        self._dim = int(probes.shape[1])

    def _encode_onnx(self, texts: list[str], *, parallel: bool = True) -> np.ndarray:
        if self._lowercase:
            texts = [t.lower() for t in texts]
        rows = self._rows_per_run
        encodings = self._tokenizer.encode_batch(texts)
        runs = plan_runs(encodings, batch_size=rows, token_budget=self.token_budget)
        if not parallel or len(runs) < 2 or self._dim is None or not self._parallel_ready():
            return encode_in_runs(self._session, encodings, batch_size=rows, token_budget=self.token_budget)
        # Several runs: each worker thread embeds its share of the runs with a one-thread session. The runs are the
        # same as on the main session, and a run's vectors do not depend on the thread count of the session that
        # computes them (checked bit for bit when the one-thread session opens), so the vectors are those of the
        # serial path; the cores work on different runs instead of splitting each small run's operators.
        out = np.empty((len(encodings), self._dim), dtype=np.float32)
        parts = split_runs(encodings, runs, self._workers)
        assert self._pool is not None
        futures = [self._pool.submit(run_into, self._single, encodings, p, out) for p in parts[1:]]
        try:
            run_into(self._single, encodings, parts[0], out)
        finally:
            for f in futures:
                f.result()
        return out

    @property
    def _rows_per_run(self) -> int:
        # int8 runs one text at a time: activations are quantized with one scale per run, so a text run beside
        # others would take their scale, and its vector (and every answer built on it) would depend on the batch.
        return 1 if self.quantize != "none" else self.batch_size

    def _parallel_ready(self) -> bool:
        """True when runs may go to worker threads: more than one thread allowed, and a one-thread session that
        gives the main session's vectors bit for bit on the probe texts (opened here once)."""
        if self._parallel is not None:
            return self._parallel
        with self._parallel_lock:
            if self._parallel is None:
                ok = False
                if self._workers > 1:
                    single = open_session(self.onnx_path(), threads=1)
                    texts = [t.lower() for t in PROBE_TEXTS] if self._lowercase else list(PROBE_TEXTS)
                    encodings = self._tokenizer.encode_batch(texts)
                    rows = self._rows_per_run
                    runs = plan_runs(encodings, batch_size=rows, token_budget=self.token_budget)
                    main = encode_in_runs(self._session, encodings, batch_size=rows, token_budget=self.token_budget)
                    alone = np.empty_like(main)
                    run_into(single, encodings, runs, alone)
                    ok = bool(np.array_equal(main, alone))
                    if ok:
                        self._single = single
                        self._pool = ThreadPoolExecutor(max_workers=self._workers - 1, thread_name_prefix="embed")
                self._parallel = ok
        return self._parallel

    # ---- encoding ----

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """Encode texts to L2-normalised float32 vectors, shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self._load()
        if self.backend == "onnx":
            return self._encode_onnx(list(texts))
        vecs = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vecs, dtype=np.float32)
