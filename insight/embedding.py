"""Sentence embeddings from a local sentence-transformers model folder (never a hub download).

Two backends compute the same function (mean-pooled, L2-normalised transformer output):

- "torch": sentence-transformers on torch (the reference).
- "onnx": the same transformer exported once with `torch.onnx.export` (mean pooling and normalisation inside the
  graph), run with onnxruntime and the model's own `tokenizer.json` (Rust `tokenizers`). No torch at inference, less
  padding (texts sorted by token count) and a lighter runtime: a multiple of the torch throughput and a fraction of
  its single-text latency (bench/predictors_intent.py measures both; history in docs/PERFORMANCE.md).

Optionally (`quantize="int8"`, onnx only) the export's weight matrices are quantized to int8 per output channel, with
activations quantized per batch at run time (onnxruntime dynamic quantization, VNNI on x86): higher throughput than
float for vectors close to, but not equal to, the float ones. Since the activation scale is set per run, a text's int8
vector depends a little on the texts run with it, which float vectors do not (docs/PERFORMANCE.md, "Embedding", has
the figures). It is another embedding function, so it has its own fingerprint: a model trained on float embeddings
refuses to load with the int8 embedder and vice versa.

The exported file is cached in `cache_dir` under a key made of the model fingerprint, the weight files' size and
modification time and the export recipe version, and carries the torch embeddings of a few probe texts in its
metadata. Every load re-embeds the probes with onnxruntime and refuses the file (`ModelArtifactError`) if any value
differs from torch by more than `ONNX_TOLERANCE`, so both backends share one fingerprint: a model trained on torch
embeddings loads with the ONNX embedder and vice versa. Nothing falls back silently from one backend to the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from insight.errors import InvalidInput, ModelArtifactError

EMBEDDING_BACKENDS: tuple[str, ...] = ("torch", "onnx")
EMBEDDING_QUANTIZATIONS: tuple[str, ...] = ("none", "int8")
# Bump when the int8 recipe (which nodes, per-channel, weight type) changes: cached files and fingerprints carry it.
INT8_RECIPE_VERSION = 1
# Matrix multiplications kept in float in the int8 model: the first layer's feed-forward output projection, whose
# input (after GELU) quantizes worst: quantizing it alone costs the most cosine to the float vectors of any layer's
# projection, and keeping it float costs no measurable speed (docs/PERFORMANCE.md, "Embedding"; the accuracy and
# throughput of both are in bench/predictors_intent.py).
_INT8_KEEP_FLOAT = re.compile(r"layer\.0/output/dense/MatMul$")
# Smallest cosine between an int8 probe embedding and torch's float one accepted at load: below what a sound int8
# file gives on any probe text (the empty one is the lowest), far above what a broken file gives (docs/PERFORMANCE.md).
INT8_MIN_COSINE = 0.95
# Bump when the export recipe (graph, opset, inputs) changes: cached files are keyed by it.
ONNX_EXPORT_VERSION = 1
ONNX_OPSET = 17
# Largest |onnx - torch| accepted on any probe value: well above the export's real difference, which is the size of
# torch's own difference between embedding a text alone and inside a padded batch (docs/PERFORMANCE.md).
ONNX_TOLERANCE = 1e-5
_ONNX_OUTPUT = "sentence_embedding"
# ONNX runs are sized by tokens, not rows: texts sorted longest first, each run takes as many as fit this many tokens
# at its own width (at most batch_size rows). Attention and the padded activations of a large run leave the CPU
# caches; runs of this size stay in them. Chosen against fixed-row runs and other budgets on Banking77, simulated and
# long real tickets (docs/PERFORMANCE.md, "Embedding").
DEFAULT_TOKEN_BUDGET = 512
_META_KEY = "deskpilot_embedding"
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


def default_cache_dir() -> Path:
    """Where exported ONNX models are cached by default: $XDG_CACHE_HOME/deskpilot/embeddings (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deskpilot" / "embeddings"


class Embedder:
    """Loads a sentence-transformers model from a folder on disk and encodes text to unit vectors.

    `backend` is "torch" or "onnx" (see the module docstring); `threads` caps the CPU threads of inference (None:
    the library default; for torch it is `torch.set_num_threads`, which is process-wide); `cache_dir` is where the
    ONNX export is kept (default `default_cache_dir()`); `quantize` is "none" or "int8" (onnx only, see the module
    docstring); `token_budget` caps the tokens of one ONNX run (rows x padded width), `batch_size` its rows. Float
    vectors do not depend on how texts are batched (within 1e-6); int8 ones do slightly, since activations are
    quantized per run.
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
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads is not None:
                torch.set_num_threads(self.threads)
            # local_files_only: a folder path never reaches a model hub, even if HF_HUB_OFFLINE is unset.
            return SentenceTransformer(
                str(self.model_path), device=self.device, local_files_only=True, trust_remote_code=False
            )
        except ModelArtifactError:
            raise
        except Exception as e:  # a truncated weight file, a bad config ...: name the folder, keep the cause
            raise ModelArtifactError(
                f"cannot load the embedding model in {self.model_path}: {type(e).__name__}: {e}"
            ) from e

    # ---- onnx backend ----

    def _text_settings(self) -> tuple[int, bool]:
        """(max_seq_length, do_lower_case) from sentence_bert_config.json, as sentence-transformers applies them."""
        p = self.model_path / "sentence_bert_config.json"
        try:
            cfg = json.loads(p.read_text())
            return int(cfg["max_seq_length"]), bool(cfg.get("do_lower_case", False))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelArtifactError(
                f"the onnx embedding backend needs max_seq_length in {p} ({type(e).__name__}: {e}); "
                "use DESKPILOT_EMBEDDING_BACKEND=torch for this model"
            ) from e

    def _check_onnx_architecture(self) -> None:
        """The exported graph is transformer + mean pooling + normalisation; refuse models that are anything else."""
        try:
            modules = json.loads((self.model_path / "modules.json").read_text())
            types = [m["type"].rsplit(".", 1)[-1] for m in modules]
            pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
            pooling = json.loads((self.model_path / pooling_dir / "config.json").read_text())
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
            raise ModelArtifactError(
                f"the onnx embedding backend cannot read the module list of {self.model_path} "
                f"({type(e).__name__}: {e}); use DESKPILOT_EMBEDDING_BACKEND=torch for this model"
            ) from e
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
        if types[:2] != ["Transformer", "Pooling"] or types[2:] not in ([], ["Normalize"]) \
                or modes != ["pooling_mode_mean_tokens"]:
            raise ModelArtifactError(
                f"the onnx embedding backend supports Transformer + mean Pooling (+ Normalize) models; "
                f"{self.model_path} has modules {types} and pooling {modes}; use DESKPILOT_EMBEDDING_BACKEND=torch"
            )

    def onnx_path(self, quantize: str | None = None) -> Path:
        """File the ONNX export of this model is cached in (it may not exist yet); `quantize` defaults to this
        embedder's (the int8 file is made from the float one)."""
        quantize = self.quantize if quantize is None else quantize
        h = hashlib.sha256(self._model_fingerprint().encode())
        for w in self._weight_files():
            st = w.stat()
            h.update(json.dumps([w.name, st.st_size, st.st_mtime_ns]).encode())
        h.update(f"export-v{ONNX_EXPORT_VERSION}-opset{ONNX_OPSET}".encode())
        suffix = ""
        if quantize != "none":
            h.update(f"{quantize}-v{INT8_RECIPE_VERSION}".encode())
            suffix = f"-{quantize}"
        return self.cache_dir / f"{self.model_path.name}-{h.hexdigest()[:20]}{suffix}.onnx"

    def _load_onnx(self) -> None:
        self._check_onnx_architecture()
        max_len, self._lowercase = self._text_settings()
        tok_file = self.model_path / "tokenizer.json"
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
        self._tokenizer = tok
        path = self.onnx_path()
        if not path.is_file():
            float_path = self.onnx_path("none")
            if not float_path.is_file():
                self._export_onnx(float_path)
            if self.quantize == "int8":
                self._quantize_int8(float_path, path)
        self._session = self._open_session(path)
        meta = self._session.get_modelmeta().custom_metadata_map.get(_META_KEY)
        try:
            info = json.loads(meta)
            probes = np.asarray(info["probe_embeddings"], dtype=np.float32)
            ok = info["probe_texts"] == list(PROBE_TEXTS) and info["fingerprint"] == self._model_fingerprint() \
                and info.get("quantize", "none") == self.quantize
        except (TypeError, ValueError, KeyError) as e:
            raise ModelArtifactError(
                f"cached ONNX embedding model {path} has no valid deskpilot metadata ({type(e).__name__}: {e}); "
                "delete the file to export it again"
            ) from e
        if not ok:
            raise ModelArtifactError(f"cached ONNX embedding model {path} was exported from another model or "
                                     "with other probes; delete the file to export it again")
        self._check_against(probes, path)
        self._dim = int(probes.shape[1])

    def _open_session(self, path: Path) -> Any:
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.inter_op_num_threads = 1
            if self.threads is not None:
                opts.intra_op_num_threads = self.threads
            # Idle worker threads sleep instead of spinning: right after embedding, the classifier's BLAS and
            # sklearn work needs the same cores (docs/PERFORMANCE.md, "Embedding").
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelArtifactError(
                f"cannot open the ONNX embedding model {path} ({type(e).__name__}: {e}); "
                "delete the file to export it again"
            ) from e

    def _check_against(self, reference: np.ndarray, path: Path) -> None:
        got = self._encode_onnx(list(PROBE_TEXTS))
        if got.shape != reference.shape:
            raise ModelArtifactError(f"ONNX embedding model {path} gives shape {got.shape}, torch gave "
                                     f"{reference.shape}; delete the file to export it again")
        if self.quantize == "int8":
            cos = float((got * reference).sum(axis=1).min())
            if not cos >= INT8_MIN_COSINE:
                raise ModelArtifactError(
                    f"int8 ONNX embeddings of {self.model_path.name} reach a cosine of only {cos:.4f} "
                    f"(< {INT8_MIN_COSINE}) to torch's on the probe texts ({path}); delete the file to quantize it "
                    "again, or set DESKPILOT_EMBEDDING_QUANTIZE=none"
                )
            return
        diff = float(np.abs(got - reference).max())
        if not diff <= ONNX_TOLERANCE:
            raise ModelArtifactError(
                f"ONNX embeddings of {self.model_path.name} differ from torch by {diff:.2e} (> {ONNX_TOLERANCE:g}) "
                f"on the probe texts ({path}); use DESKPILOT_EMBEDDING_BACKEND=torch"
            )

    def _export_onnx(self, path: Path) -> None:
        """Export transformer + mean pooling + L2 normalisation to `path` (atomic), with torch probe embeddings."""
        st_model = self._load_sentence_transformer()
        try:
            import onnx
            import torch

            reference = np.asarray(
                st_model.encode(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS), normalize_embeddings=True,
                                convert_to_numpy=True), dtype=np.float32)
            graph = _pooled_encoder(st_model[0].auto_model).eval()
            example = self._feeds(self._tokenizer.encode_batch(list(PROBE_TEXTS[:2])), ("input_ids",
                                  "attention_mask", "token_type_ids"))
            with tempfile.TemporaryDirectory(prefix="deskpilot-onnx-") as tmpdir, warnings.catch_warnings(), \
                    torch.no_grad():
                raw = Path(tmpdir) / "model.onnx"
                warnings.simplefilter("ignore")  # tracer and legacy-exporter chatter; the probes check the result
                torch.onnx.export(
                    graph, tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask",
                                                                         "token_type_ids")),
                    str(raw), input_names=["input_ids", "attention_mask", "token_type_ids"],
                    output_names=[_ONNX_OUTPUT],
                    dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                  "token_type_ids": {0: "batch", 1: "tokens"}, _ONNX_OUTPUT: {0: "batch"}},
                    opset_version=ONNX_OPSET, dynamo=False,
                )
                proto = onnx.load(str(raw))
            info = {"fingerprint": self._model_fingerprint(), "model": self.model_path.name, "torch": torch.__version__,
                    "export_version": ONNX_EXPORT_VERSION, "probe_texts": list(PROBE_TEXTS),
                    "probe_embeddings": reference.tolist()}
            proto.metadata_props.add(key=_META_KEY, value=json.dumps(info))
            data = proto.SerializeToString()
        except ModelArtifactError:
            raise
        except Exception as e:
            raise ModelArtifactError(
                f"ONNX export of the embedding model {self.model_path} failed ({type(e).__name__}: {e}); "
                "use DESKPILOT_EMBEDDING_BACKEND=torch"
            ) from e
        _write_atomic(path, data)

    def _quantize_int8(self, src: Path, path: Path) -> None:
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
            info = json.loads(meta[_META_KEY])
            info.update({"quantize": self.quantize, "int8_recipe": INT8_RECIPE_VERSION, "kept_float": keep})
            del proto.metadata_props[:]
            for k, v in meta.items():
                proto.metadata_props.add(key=k, value=json.dumps(info) if k == _META_KEY else v)
            data = proto.SerializeToString()
        except Exception as e:
            raise ModelArtifactError(
                f"int8 quantization of the ONNX embedding model {src} failed ({type(e).__name__}: {e}); "
                "set DESKPILOT_EMBEDDING_QUANTIZE=none, or delete the file to export it again"
            ) from e
        _write_atomic(path, data)

    @staticmethod
    def _feeds(encodings: list[Any], names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
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

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        if self._lowercase:
            texts = [t.lower() for t in texts]
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Longest first, like sentence-transformers: batches of similar length pad little.
        order = np.argsort(-lengths, kind="stable")
        names = [i.name for i in self._session.get_inputs()]
        out: np.ndarray | None = None
        start = 0
        while start < len(texts):
            # Rows per run: as many as fit the token budget at this chunk's width (its first, longest text), at most
            # batch_size, at least one. See DEFAULT_TOKEN_BUDGET for why small runs are faster.
            rows = max(1, min(self.batch_size, self.token_budget // max(1, int(lengths[order[start]]))))
            idx = order[start:start + rows]
            start += rows
            vecs = self._session.run([_ONNX_OUTPUT], self._feeds([encodings[i] for i in idx], names))[0]
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        return out

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


def _write_atomic(path: Path, data: bytes) -> None:
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
