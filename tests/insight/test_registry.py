"""Model registry: round trip, live pointer, version checks and broken artifacts fail loudly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput, ModelArtifactError, ModelNotReady, NotFound
from insight.models.ngram import NGramBackoff
from insight.models.registry import (
    HISTORY_FILE,
    LIVE_FILE,
    METADATA_FILE,
    MODEL_FILE,
    ArtifactMetadata,
    ModelRegistry,
)


def _model() -> NGramBackoff:
    seqs = [("a",), ("a", "b"), ("a", "b", "c"), ("a",), ("a", "b")]
    return NGramBackoff(n=3, min_count=1).fit(seqs, ["b", "c", "<END>", "b", "c"])


def test_round_trip_keeps_predictions_and_metadata(tmp_path):
    reg = ModelRegistry(tmp_path)
    m = _model()
    meta = ArtifactMetadata(task="x", features=["seq"], classes=list(m.classes_), metrics={"acc": 0.5},
                            hyper_params={"n": 3}, training_window=["2024-01-01", "2024-02-01"])
    ref = reg.save(m, task="next_activity", metadata=meta, promote=True)
    assert (ref.path / MODEL_FILE).is_file() and (ref.path / METADATA_FILE).is_file()
    stored = json.loads((ref.path / METADATA_FILE).read_text())
    assert stored["task"] == "next_activity"
    assert stored["libraries"]["scikit-learn"] and stored["libraries"]["lightgbm"]
    assert stored["metrics"] == {"acc": 0.5} and stored["hyper_params"] == {"n": 3}
    loaded = reg.load("next_activity")
    assert loaded.ref.version == ref.version
    prefixes = [("a",), ("a", "b"), ("z",)]
    assert list(loaded.model.predict(prefixes)) == list(m.predict(prefixes)) == ["b", "c", "b"]
    assert loaded.metadata.classes == list(m.classes_)


def test_versions_and_live_pointer(tmp_path):
    reg = ModelRegistry(tmp_path)
    a = reg.save(_model(), task="router", version="v1")
    b = reg.save(_model(), task="router", version="v2")
    assert reg.list_versions("router") == ["v1", "v2"]
    with pytest.raises(ModelNotReady, match="deskpilot train"):
        reg.load("router")
    reg.promote("router", a.version)
    assert reg.load("router").ref.version == "v1"
    reg.promote("router", b.version)
    assert json.loads((tmp_path / "router" / LIVE_FILE).read_text())["version"] == "v2"
    assert reg.load("router").ref.version == "v2"
    assert reg.load("router", "v1").ref.version == "v1"
    with pytest.raises(NotFound):
        reg.promote("router", "v9")
    with pytest.raises(ModelArtifactError, match="already exists"):
        reg.save(_model(), task="router", version="v1")
    # no leftover temp folders or pointer files; every promotion is in the history
    assert sorted(p.name for p in (tmp_path / "router").iterdir()) == [HISTORY_FILE, LIVE_FILE, "v1", "v2"]


def test_library_version_mismatch_is_refused(tmp_path):
    reg = ModelRegistry(tmp_path)
    ref = reg.save(_model(), task="intent", promote=True)
    meta_path = ref.path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["libraries"]["scikit-learn"] = "0.24.2"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match=r"scikit-learn 0\.24\.2 \(artifact\)"):
        reg.load("intent")
    # a patch-level difference is accepted
    import sklearn

    major, minor = sklearn.__version__.split(".")[:2]
    meta["libraries"]["scikit-learn"] = f"{major}.{minor}.999"
    meta_path.write_text(json.dumps(meta))
    assert reg.load("intent").model is not None


def test_corrupt_or_missing_files_fail_loudly(tmp_path):
    reg = ModelRegistry(tmp_path)
    ref = reg.save(_model(), task="t", promote=True)
    (ref.path / MODEL_FILE).write_bytes(b"not a joblib file")
    with pytest.raises(ModelArtifactError, match="cannot read model file"):
        reg.load("t")
    (ref.path / MODEL_FILE).unlink()
    with pytest.raises(ModelArtifactError, match="has no model.joblib"):
        reg.load("t")
    (ref.path / METADATA_FILE).write_text("{broken")
    with pytest.raises(ModelArtifactError, match="not valid metadata JSON"):
        reg.load("t")
    (tmp_path / "t" / LIVE_FILE).write_text("garbage")
    with pytest.raises(ModelArtifactError, match="live pointer"):
        reg.load("t")
    with pytest.raises(ModelArtifactError, match="invalid task"):
        reg.save(_model(), task="../escape")


def test_data_hash_is_stable_and_sensitive():
    import pandas as pd

    from insight.models.registry import data_hash

    a = pd.DataFrame({"x": [1, 2, 3]})
    assert data_hash(a) == data_hash(a.copy())
    assert data_hash(a) != data_hash(pd.DataFrame({"x": [1, 2, 4]}))
    assert len(data_hash(np.arange(3))) == 16


def test_artifact_from_other_model_code_is_refused(tmp_path):
    """A pickle written by another version of the model's code fails loudly instead of misbehaving later."""
    import json

    import numpy as np
    import pandas as pd

    from core.errors import ModelArtifactError
    from insight.models.memory import TicketMemory
    from insight.models.registry import ArtifactMetadata, ModelRegistry

    reg = ModelRegistry(tmp_path)
    model = TicketMemory().fit(pd.DataFrame({"case_id": ["a", "b"]}), text=pd.Series(["x", "y"]),
                               embeddings=np.eye(2, dtype=np.float32))
    ref = reg.save(model, task="memory", metadata=ArtifactMetadata(task="memory"), promote=True)
    assert reg.load("memory").metadata.extra["code"]["class"] == "insight.models.memory.TicketMemory"
    meta_path = ref.path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["extra"]["code"]["source_sha256"] = "0" * 16
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="another version of insight.models.memory.TicketMemory"):
        reg.load("memory")


def test_artifact_of_an_older_format_is_refused_by_name(tmp_path):
    """An artifact written before the current format (or before formats were recorded) fails loudly on load, naming
    the artifact, its format and the one this code reads, instead of loading half right."""
    from insight.models.registry import ARTIFACT_FORMAT

    reg = ModelRegistry(tmp_path)
    ref = reg.save(_model(), task="next_activity", version="v1", promote=True)
    meta_path = ref.path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    assert meta["format_version"] == ARTIFACT_FORMAT
    assert reg.load("next_activity").metadata.format_version == ARTIFACT_FORMAT
    del meta["format_version"]  # what every artifact written before format versions looks like
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError,
                       match=rf"artifact next_activity/v1 has format version 1, this deskpilot reads format "
                             rf"{ARTIFACT_FORMAT} only; retrain"):
        reg.load("next_activity")
    meta["format_version"] = ARTIFACT_FORMAT + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match=rf"format version {ARTIFACT_FORMAT + 1}"):
        reg.load("next_activity", "v1")


def test_model_code_hash_covers_the_sibling_modules_a_model_uses(monkeypatch):
    """Editing team_history.py (used by the router) must invalidate stored routers like editing router.py does."""
    import inspect

    from insight.models import team_history
    from insight.models.registry import model_code
    from insight.models.router import TeamRouter

    before = model_code(TeamRouter)["source_sha256"]
    real = inspect.getsource

    def edited(obj):
        text = real(obj)
        return text + "\n# edited\n" if obj is team_history else text

    monkeypatch.setattr(inspect, "getsource", edited)
    assert model_code(TeamRouter)["source_sha256"] != before


def test_model_code_hash_follows_modules_used_through_other_modules(monkeypatch):
    """The prefix encoder reaches NextActivityPredictor through the shared LightGBM base: editing it counts too."""
    import inspect

    from insight.models.next_activity import NextActivityPredictor
    from insight.models.prefix_features import PrefixEncoder
    from insight.models.registry import model_code

    module = inspect.getmodule(PrefixEncoder)
    before = model_code(NextActivityPredictor)["source_sha256"]
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("\n# edited\n" if obj is module else ""))
    assert model_code(NextActivityPredictor)["source_sha256"] != before


def test_history_and_rollback_record_who_when_why(tmp_path):
    reg = ModelRegistry(tmp_path)
    for v in ("v1", "v2", "v3"):
        reg.save(_model(), task="router", version=v)
    reg.promote("router", "v1")  # a training run: the OS user, "saved as live by training"
    reg.promote("router", "v3", who="admin-a", why="gate passed")
    reg.record("router", "reject", version="v2", who="admin-a", why="gate rejected")
    assert reg.rollback_target("router") == "v1"  # the version live before v3, not the newest older one (v2)
    previous, ref = reg.rollback("router", who="admin-b", why="bad answers")
    assert (previous, ref.version, reg.live_version("router")) == ("v3", "v1", "v1")
    hist = reg.history("router")
    assert [(h["action"], h["version"], h["previous"]) for h in hist] == [
        ("promote", "v1", None), ("promote", "v3", "v1"), ("reject", "v2", "v3"), ("rollback", "v1", "v3")]
    assert hist[0]["who"].startswith("cli:") and hist[0]["why"] == "saved as live by training"
    assert hist[-1]["who"] == "admin-b" and hist[-1]["why"] == "bad answers" and hist[-1]["at"]
    # Rolling back again goes to what was live before v1 came back (v3); an explicit target wins.
    assert reg.rollback_target("router") == "v3"
    reg.rollback("router", to="v2", who="admin-b")
    assert reg.live_version("router") == "v2"
    with pytest.raises(InvalidInput, match="already live"):
        reg.rollback("router", to="v2")
    with pytest.raises(NotFound):
        reg.rollback("router", to="v9")
    with pytest.raises(NotFound, match="no live version"):
        reg.rollback("intent")


def test_update_extra_keeps_the_rest_of_the_metadata(tmp_path):
    reg = ModelRegistry(tmp_path)
    ref = reg.save(_model(), task="router", metadata={"metrics": {"acc": 0.7}})
    reg.update_extra("router", ref.version, gate={"verdict": "pass"})
    meta = reg.read_metadata("router", ref.version)
    assert meta.extra["gate"] == {"verdict": "pass"} and meta.metrics == {"acc": 0.7} and meta.extra["code"]
    assert reg.load("router", ref.version).metadata.extra["gate"]["verdict"] == "pass"


def test_training_data_is_stored_once_and_read_back(tmp_path, sim_small):
    reg = ModelRegistry(tmp_path)
    assert reg.load_training_data() is None
    info = reg.save_training_data(sim_small.log, sim_small.tickets, source="simulator")
    again = reg.save_training_data(sim_small.log, sim_small.tickets)
    assert again["hash"] == info["hash"] and len(list((tmp_path / "_training_data").iterdir())) == 2  # data + pointer
    log, tickets, stored = reg.load_training_data()
    assert stored["n_cases"] == sim_small.log.n_cases == log.n_cases
    assert list(log.case_attributes) == list(sim_small.log.case_attributes)
    assert log.df.equals(sim_small.log.df.reset_index(drop=True))
    # Times come back as the UTC the live log uses: history and live events concatenate as datetimes.
    live = pd.Series(pd.to_datetime(["2026-06-01T10:00:00"], utc=True))
    assert isinstance(pd.concat([log.df["timestamp"], live]).dtype, pd.DatetimeTZDtype)
    assert isinstance(pd.concat([tickets["created_at"], live]).dtype, pd.DatetimeTZDtype)
    assert tickets["subject"].tolist() == sim_small.tickets["subject"].tolist()
    # The data folder is not a task.
    reg.save(_model(), task="router")
    assert reg.tasks() == ["router"]
