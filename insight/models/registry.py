"""Model registry: one folder per artifact (`<root>/<task>/<version>/`) with a joblib model and metadata.json.

A per-task `live.json` pointer names the version served by default; it is replaced atomically (temp + os.replace)
so a reader never sees a half-written pointer. Loading checks the artifact format, the model code and library
versions, and fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from core.errors import InvalidInput, ModelArtifactError, ModelNotReady, NotFound

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
LIVE_FILE = "live.json"
HISTORY_FILE = "history.jsonl"
TRAINING_DATA_DIR = "_training_data"
TRAINING_META = "data.json"
# Libraries whose major.minor must match between the writer and the reader of an artifact.
CHECKED_LIBRARIES = ("scikit-learn", "lightgbm")
# The layout of what model.joblib holds (the estimators' fitted attributes). Bump it when that layout changes so
# the code no longer reads older pickles; the registry then refuses them by name instead of the code guessing at
# missing attributes. Artifacts written before this number was recorded are format 1.
ARTIFACT_FORMAT = 2
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def library_versions() -> dict[str, str]:
    """Versions of the libraries an artifact depends on, as installed here."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("scikit-learn", "lightgbm", "numpy", "pandas", "sentence-transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def model_code(cls: type) -> dict[str, str]:
    """A model class and a hash of its module's source: a pickle is only loaded into the code that wrote it."""
    import importlib
    import inspect

    # The class's module and the sibling modules it uses, directly or through each other (router -> team_history,
    # next_activity -> _lgbm -> prefix_features.encoder, ...): a change in any of them changes what a pickle means.
    package = cls.__module__.rpartition(".")[0]
    used = {cls.__module__}
    todo = [cls.__module__]
    while todo:
        for value in vars(importlib.import_module(todo.pop())).values():
            name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if (isinstance(name, str) and package and name.startswith(package + ".") and name != __name__
                    and name not in used):
                used.add(name)
                todo.append(name)
    source = ""
    for name in sorted(used):
        try:
            source += inspect.getsource(importlib.import_module(name))
        except (OSError, TypeError):  # built-in or frozen modules have no source; the class name still guards
            continue
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "source_sha256": hashlib.sha256(source.encode()).hexdigest()[:16]}


def _code_of_class(path: str) -> dict[str, str] | None:
    import importlib

    module_name, _, qualname = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, qualname)
    except (ImportError, AttributeError):
        return None
    return model_code(cls)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def data_hash(*frames: Any) -> str:
    """Stable sha256 (first 16 hex) of the training data (pandas frames / series / arrays / strings)."""
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    for obj in frames:
        if isinstance(obj, pd.DataFrame | pd.Series):
            h.update(pd.util.hash_pandas_object(obj, index=False).to_numpy().tobytes())
        elif isinstance(obj, np.ndarray):
            h.update(np.ascontiguousarray(obj).tobytes())
        else:
            h.update(repr(obj).encode())
    return h.hexdigest()[:16]


@dataclass
class ArtifactMetadata:
    """What is known about one trained model: versions, inputs, outputs, data and quality."""

    task: str
    version: str = ""
    created_at: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    training_data_hash: str = ""
    training_window: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    hyper_params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "task": self.task,
            "version": self.version,
            "created_at": self.created_at,
            "libraries": dict(self.libraries),
            "features": list(self.features),
            "classes": list(self.classes),
            "training_data_hash": self.training_data_hash,
            "training_window": list(self.training_window),
            "metrics": self.metrics,
            "hyper_params": self.hyper_params,
            "extra": self.extra,
            "format_version": self.format_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactMetadata:
        """Inverse of to_dict (unknown keys go to `extra`)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kwargs, extra=extra)


@dataclass(frozen=True)
class ArtifactRef:
    """Where a saved artifact lives."""

    task: str
    version: str
    path: Path


@dataclass
class LoadedArtifact:
    """A model read back from the registry with its metadata."""

    model: Any
    metadata: ArtifactMetadata
    ref: ArtifactRef


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, datetime | Path):
        return str(o)
    return repr(o)


def _os_user() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _to_parquet(df: Any, path: Path) -> None:
    """A frame as Parquet; object columns mixing types (custom ticket fields) are stored as strings."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c].dropna().head(1000)}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                out[c] = out[c].map(lambda v: v if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    out.to_parquet(path, index=False)


@contextmanager
def _staged_folder(final: Path) -> Iterator[Path]:
    """A temp folder beside `final`, renamed onto it when the block succeeds and removed when it fails: a crash
    never leaves a half-written folder under the final name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelRegistry:
    """A registry folder holding versioned model artifacts per task, each with a `live` pointer."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _check_name(self, what: str, value: str) -> str:
        if not value or not _SAFE.match(value):
            raise ModelArtifactError(f"invalid {what} {value!r}: use letters, digits, '_', '-', '.'")
        return value

    def _task_dir(self, task: str) -> Path:
        return self.root / self._check_name("task", task)

    def save(
        self,
        model: Any,
        *,
        task: str,
        metadata: ArtifactMetadata | dict[str, Any] | None = None,
        version: str | None = None,
        promote: bool = False,
    ) -> ArtifactRef:
        """Write a model and its metadata as a new version folder (optionally make it live)."""
        meta = (
            ArtifactMetadata.from_dict({**metadata, "task": task})
            if isinstance(metadata, dict)
            else (metadata or ArtifactMetadata(task=task))
        )
        meta.task = task
        now = datetime.now(UTC)
        if version is None:
            # Time-ordered, sortable versions; a suffix keeps two saves in the same second distinct.
            base = now.strftime("v%Y%m%dT%H%M%S")
            version = base
            n = 1
            while (self._task_dir(task) / version).exists():
                n += 1
                version = f"{base}-{n}"
        self._check_name("version", version)
        final = self._task_dir(task) / version
        if final.exists():
            raise ModelArtifactError(f"artifact {task}/{version} already exists at {final}")
        meta.version = version
        meta.created_at = now.isoformat()
        meta.libraries = library_versions()
        meta.format_version = ARTIFACT_FORMAT
        meta.extra = {**meta.extra, "code": model_code(type(model))}
        with _staged_folder(final) as tmp:
            joblib.dump(model, tmp / MODEL_FILE, compress=3)
            (tmp / METADATA_FILE).write_text(
                json.dumps(meta.to_dict(), indent=2, default=_json_default), encoding="utf-8"
            )
        ref = ArtifactRef(task=task, version=version, path=final)
        if promote:
            self.promote(task, version)
        return ref

    def list_versions(self, task: str) -> list[str]:
        """Versions of a task, oldest first (empty when none)."""
        d = self._task_dir(task)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def tasks(self) -> list[str]:
        """Tasks that have at least one version (folders named `_...` / `.…` hold registry data, not tasks)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _SAFE.match(p.name) and not p.name.startswith("_") and self.list_versions(p.name))

    def promote(self, task: str, version: str, *, who: str | None = None, why: str | None = None,
                action: str = "promote", extra: dict[str, Any] | None = None) -> ArtifactRef:
        """Make `version` the live one for `task` (atomic pointer swap), recorded in the task's history file."""
        path = self._task_dir(task) / self._check_name("version", version)
        if not (path / METADATA_FILE).is_file():
            raise NotFound(f"no artifact {task}/{version} in registry {self.root}")
        previous = self.live_version(task)
        _atomic_write_text(
            self._task_dir(task) / LIVE_FILE,
            json.dumps({"task": task, "version": version, "promoted_at": datetime.now(UTC).isoformat()}),
        )
        self._record(task, {"action": action, "version": version, "previous": previous,
                            "who": who or _os_user(), "why": why or "saved as live by training", **(extra or {})})
        return ArtifactRef(task=task, version=version, path=path)

    # ------------------------------------------------------------ history, rollback, metadata updates

    def _record(self, task: str, entry: dict[str, Any]) -> None:
        """Append one line to `<task>/history.jsonl` (one write per line: concurrent writers do not interleave)."""
        line = json.dumps({"at": datetime.now(UTC).isoformat(), "task": task, **entry}, default=_json_default)
        path = self._task_dir(task) / HISTORY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def record(self, task: str, action: str, *, version: str | None, who: str | None, why: str | None,
               **extra: Any) -> None:
        """Record an event that did not move the live pointer (e.g. a rejected challenger) in the task's history."""
        self._record(task, {"action": action, "version": version, "previous": self.live_version(task),
                            "who": who or _os_user(), "why": why, **extra})

    def history(self, task: str) -> list[dict[str, Any]]:
        """The task's recorded promotions, rollbacks and rejections, oldest first (a corrupt line is skipped)."""
        path = self._task_dir(task) / HISTORY_FILE
        if not path.is_file():
            return []
        out: list[dict[str, Any]] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def rollback_target(self, task: str) -> str:
        """The version that was live before the current one (from the history; else the next older version)."""
        live = self.live_version(task)
        if live is None:
            raise NotFound(f"task {task!r} has no live version in registry {self.root}; nothing to roll back")
        for entry in reversed(self.history(task)):
            if entry.get("version") == live and entry.get("action") in ("promote", "rollback", "force"):
                prev = entry.get("previous")
                if prev and prev != live and (self._task_dir(task) / str(prev) / METADATA_FILE).is_file():
                    return str(prev)
                break
        older = [v for v in self.list_versions(task) if v < live]
        if not older:
            raise NotFound(f"task {task!r}: live version {live} has no earlier version to roll back to")
        return older[-1]

    def rollback(self, task: str, *, to: str | None = None, who: str | None = None,
                 why: str | None = None) -> tuple[str | None, ArtifactRef]:
        """Point `task` back at `to` (default: the version live before the current one); (old live, new ref)."""
        previous = self.live_version(task)
        target = to or self.rollback_target(task)
        if target == previous:
            raise InvalidInput(f"{task}/{target} is already live", field="to")
        ref = self.promote(task, target, who=who, why=why or "rollback", action="rollback")
        return previous, ref

    def update_extra(self, task: str, version: str, **extra: Any) -> ArtifactMetadata:
        """Add keys to an artifact's metadata `extra` (e.g. its gate results), rewriting metadata.json atomically."""
        meta = self.read_metadata(task, version)
        meta.extra = {**meta.extra, **extra}
        path = self._task_dir(task) / version / METADATA_FILE
        _atomic_write_text(path, json.dumps(meta.to_dict(), indent=2, default=_json_default))
        return meta

    def live_versions(self) -> dict[str, str]:
        """Every task's live version (tasks without one left out); reads only the small pointer files."""
        out: dict[str, str] = {}
        for task in self.tasks():
            try:
                v = self.live_version(task)
            except ModelArtifactError:
                continue
            if v:
                out[task] = v
        return out

    # ------------------------------------------------------------ the data the models learned from

    def save_training_data(self, log: Any, tickets: Any = None, *, source: str | None = None) -> dict[str, Any]:
        """Store the mined history a training run learned from (Parquet) and point `current.json` at it.

        A later retrain (`POST /v1/models/retrain`, `deskpilot models retrain`) reads it back as its history, so
        the service never retrains on its live tickets alone. Identical data is stored once (folder = data hash).
        """
        import pandas as pd

        from insight.eventlog.schema import TIMESTAMP

        digest = data_hash(log.df, tickets if tickets is not None else "")
        folder = self.root / TRAINING_DATA_DIR / digest
        ends = [log.df[TIMESTAMP].max()]
        if tickets is not None and "created_at" in tickets.columns:
            ends.append(pd.to_datetime(tickets["created_at"], utc=True).max())
        info = {"hash": digest, "name": log.name, "case_attributes": list(log.case_attributes),
                "trained_until": str(max(e for e in ends if pd.notna(e))),
                "n_events": int(len(log.df)), "n_cases": int(log.n_cases),
                "n_tickets": int(len(tickets)) if tickets is not None else 0, "source": source,
                "saved_at": datetime.now(UTC).isoformat(), "path": str(folder)}
        if not (folder / TRAINING_META).is_file():
            with _staged_folder(folder) as tmp:
                _to_parquet(log.df, tmp / "events.parquet")
                if tickets is not None:
                    _to_parquet(tickets, tmp / "tickets.parquet")
                (tmp / TRAINING_META).write_text(json.dumps(info, indent=2, default=_json_default), encoding="utf-8")
        _atomic_write_text(self.root / TRAINING_DATA_DIR / LIVE_FILE, json.dumps(info, default=_json_default))
        return info

    def training_data_info(self) -> dict[str, Any] | None:
        """What `save_training_data` stored last (None when nothing was stored)."""
        p = self.root / TRAINING_DATA_DIR / LIVE_FILE
        if not p.is_file():
            return None
        try:
            return dict(json.loads(p.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ModelArtifactError(f"training data pointer {p} is corrupt: {exc}") from exc

    def load_training_data(self) -> tuple[Any, Any, dict[str, Any]] | None:
        """(EventLog, ticket frame or None, info) stored by `save_training_data`; None when nothing was stored."""
        import pandas as pd

        from insight.eventlog.schema import EventLog

        info = self.training_data_info()
        if info is None:
            return None
        folder = self.root / TRAINING_DATA_DIR / str(info["hash"])
        try:
            df = pd.read_parquet(folder / "events.parquet")
            tickets = pd.read_parquet(folder / "tickets.parquet") if (folder / "tickets.parquet").is_file() else None
        except (OSError, ValueError) as exc:
            raise ModelArtifactError(f"cannot read the stored training data in {folder}: {exc}") from exc
        # Parquet gives back zoneinfo UTC; the rest of deskpilot uses datetime.timezone.utc, and pandas does not
        # concatenate the two as datetimes.
        for frame in (df, tickets):
            if frame is None:
                continue
            for c in frame.columns:
                if isinstance(frame[c].dtype, pd.DatetimeTZDtype):
                    frame[c] = pd.to_datetime(frame[c], utc=True)
        log = EventLog(df, name=str(info.get("name") or "training history"),
                       case_attributes=list(info.get("case_attributes") or []))
        return log, tickets, info

    def live_version(self, task: str) -> str | None:
        """Version the live pointer names, or None when the task has none."""
        p = self._task_dir(task) / LIVE_FILE
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return str(data["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelArtifactError(f"live pointer {p} is corrupt: {exc}") from exc

    def read_metadata(self, task: str, version: str) -> ArtifactMetadata:
        """Metadata of one artifact (raises when missing or corrupt)."""
        path = self._task_dir(task) / self._check_name("version", version) / METADATA_FILE
        if not path.is_file():
            raise ModelArtifactError(f"artifact {task}/{version} has no {METADATA_FILE} (expected {path})")
        try:
            return ArtifactMetadata.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ModelArtifactError(f"{path} is not valid metadata JSON: {exc}") from exc

    def check_versions(self, meta: ArtifactMetadata, where: str) -> None:
        """Refuse an artifact of another format, or written by a different major.minor of a checked library."""
        if meta.format_version != ARTIFACT_FORMAT:
            raise ModelArtifactError(
                f"artifact {where} has format version {meta.format_version}, this deskpilot reads format "
                f"{ARTIFACT_FORMAT} only; retrain it with `deskpilot train`")
        here = library_versions()
        diffs = []
        for lib in CHECKED_LIBRARIES:
            then = meta.libraries.get(lib)
            now = here.get(lib)
            if then is None or now is None:
                if then != now:
                    diffs.append(f"{lib} {then or 'absent'} (artifact) vs {now or 'absent'} (installed)")
                continue
            if _major_minor(then) != _major_minor(now):
                diffs.append(f"{lib} {then} (artifact) vs {now} (installed)")
        if diffs:
            raise ModelArtifactError(
                f"artifact {where} was written by incompatible library versions: {'; '.join(diffs)}; "
                "retrain it with `deskpilot train`"
            )
        code = meta.extra.get("code")
        if isinstance(code, dict) and code.get("class"):
            now_code = _code_of_class(str(code["class"]))
            if now_code is None:
                raise ModelArtifactError(f"artifact {where} needs {code['class']}, which this deskpilot does not have; "
                                         "retrain it with `deskpilot train`")
            if now_code["source_sha256"] != code.get("source_sha256"):
                raise ModelArtifactError(
                    f"artifact {where} was trained with another version of {code['class']} "
                    f"(code {code.get('source_sha256')} vs installed {now_code['source_sha256']}); "
                    "retrain it with `deskpilot train`")

    def load(self, task: str, version: str | None = None) -> LoadedArtifact:
        """Load a version (default: the live one) after checking its metadata and library versions."""
        if version is None:
            version = self.live_version(task)
            if version is None:
                raise ModelNotReady(
                    f"no live model for task {task!r} in registry {self.root}; run `deskpilot train` first"
                )
        where = f"{task}/{version}"
        folder = self._task_dir(task) / self._check_name("version", version)
        if not folder.is_dir():
            raise NotFound(f"no artifact {where} in registry {self.root}")
        meta = self.read_metadata(task, version)
        if meta.task != task:
            raise ModelArtifactError(f"artifact {where} metadata says task {meta.task!r}")
        self.check_versions(meta, where)
        model_path = folder / MODEL_FILE
        if not model_path.is_file():
            raise ModelArtifactError(f"artifact {where} has no {MODEL_FILE} (expected {model_path})")
        try:
            model = joblib.load(model_path)
        except Exception as exc:  # joblib/pickle raise many types on truncated or foreign files
            raise ModelArtifactError(f"cannot read model file {model_path}: {type(exc).__name__}: {exc}") from exc
        return LoadedArtifact(model=model, metadata=meta, ref=ArtifactRef(task=task, version=version, path=folder))


def save(model: Any, *, registry: str | Path, task: str, metadata: ArtifactMetadata | dict[str, Any] | None = None,
         promote: bool = False) -> ArtifactRef:
    """Save a model as a new version in the registry folder."""
    return ModelRegistry(registry).save(model, task=task, metadata=metadata, promote=promote)


def load(*, registry: str | Path, task: str, version: str | None = None) -> LoadedArtifact:
    """Load a model (default the live version) from the registry folder."""
    return ModelRegistry(registry).load(task, version)


def promote(*, registry: str | Path, task: str, version: str) -> ArtifactRef:
    """Point the task's live pointer at a version."""
    return ModelRegistry(registry).promote(task, version)


def list_versions(*, registry: str | Path, task: str) -> list[str]:
    """Versions of a task in the registry folder, oldest first."""
    return ModelRegistry(registry).list_versions(task)
