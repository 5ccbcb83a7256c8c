"""Embedder: the onnx backend gives the torch embeddings, shares their fingerprint, and fails loudly on bad artifacts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.embedding import INT8_MIN_COSINE, ONNX_TOLERANCE, Embedder
from core.errors import InvalidInput, ModelArtifactError
from insight.models.intent import IntentClassifier

EDGE_TEXTS = [
    "",
    "   ",
    "  leading and trailing spaces  ",
    "Ünïcödé naïve café, 北京, emoji 😀 and a tab\there",
    "refund " * 400,  # far beyond max_seq_length: truncated the same way
    "My card got declined at the ATM in Lisbon, can you check if it's blocked?",
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    from api.settings import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(model_path, onnx_cache) -> Embedder:
    return Embedder(model_path, backend="onnx", cache_dir=onnx_cache, batch_size=32)


@pytest.fixture(scope="module")
def tickets():
    """Simulator tickets (subject + body, planted intent); first 75 % train, rest test."""
    from insight.simulate import simulate

    t = simulate(n_cases=300, seed=11).tickets
    text = (t["subject"].astype(str) + ". " + t["body"].astype(str)).tolist()
    return text, t["intent"].astype(str).to_numpy()


def _small_model_copy(src: Path, dst: Path) -> Path:
    """A copy of the model folder's small files; the weights are linked, not copied."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md"))
    for w in list(src.glob("*.safetensors")) + list(src.glob("*.bin")):
        os.symlink(w, dst / w.name)
    return dst


def test_onnx_matches_torch_on_tickets_and_edge_cases(embedder, onnx_embedder, tickets):
    texts = tickets[0][:150] + EDGE_TEXTS
    ref = embedder.encode(texts)
    got = onnx_embedder.encode(texts)
    assert got.dtype == np.float32 and got.shape == ref.shape == (len(texts), 384)
    assert float(np.abs(got - ref).max()) <= ONNX_TOLERANCE
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # One text alone (no padding) and in any order gives the same vector.
    single = np.stack([onnx_embedder.encode([t])[0] for t in texts[-4:]])
    assert float(np.abs(single - ref[-4:]).max()) <= ONNX_TOLERANCE
    assert onnx_embedder.encode([]).shape == (0, 384)
    assert onnx_embedder.fingerprint == embedder.fingerprint and onnx_embedder.name == embedder.name


def test_runs_are_sized_by_the_token_budget(model_path, onnx_embedder, onnx_cache, tickets):
    """Texts are run longest first in chunks of at most token_budget tokens (and batch_size rows); float vectors do
    not depend on the chunking."""
    texts = tickets[0][:120] + EDGE_TEXTS
    ref = onnx_embedder.encode(texts)
    # one thread: every run on the main session, in order (test_runs_on_worker_threads_give_the_serial_vectors)
    small = Embedder(model_path, backend="onnx", cache_dir=onnx_cache, batch_size=32, token_budget=200, threads=1)
    small.encode(["warm up"])
    shapes: list[tuple[int, int]] = []
    real_run = small._session.run

    def run(outputs, feeds):
        shapes.append(feeds["input_ids"].shape)
        return real_run(outputs, feeds)

    small._session.run = run
    got = small.encode(texts)
    assert float(np.abs(got - ref).max()) <= ONNX_TOLERANCE
    assert sum(rows for rows, _ in shapes) == len(texts)
    # Each run fits the budget, except a single text longer than it (the 400-word one, truncated to 256 tokens).
    assert all(rows * width <= 200 or rows == 1 for rows, width in shapes)
    assert shapes[0] == (1, 256) and [w for _, w in shapes] == sorted((w for _, w in shapes), reverse=True)
    assert len(shapes) > len(texts) // 32 + 1  # really smaller than the 32-row runs of batch_size alone
    with pytest.raises(InvalidInput, match="token_budget"):
        Embedder(model_path, backend="onnx", token_budget=0)


def test_intent_model_trained_with_torch_runs_on_onnx(embedder, onnx_embedder, tickets):
    text, y = tickets
    cut = int(len(text) * 0.75)
    model = IntentClassifier(embedder=embedder, seed=7).fit(text[:cut], y[:cut])
    torch_pred = model.predict(text[cut:])
    torch_proba = model.predict_proba(text[cut:])
    model.set_embedder(onnx_embedder)  # same fingerprint: accepted
    assert (model.predict(text[cut:]) == torch_pred).all()
    assert float(np.abs(model.predict_proba(text[cut:]) - torch_proba).max()) < 1e-4
    assert (torch_pred == y[cut:]).mean() > 0.6  # the model learnt something; the test is not vacuous


def test_cached_export_is_reused_and_checked(model_path, onnx_embedder, onnx_cache):
    onnx_embedder.encode(["warm up"])
    path = onnx_embedder.onnx_path()
    assert path.parent == onnx_cache and path.is_file()
    mtime = path.stat().st_mtime_ns
    again = Embedder(model_path, backend="onnx", cache_dir=onnx_cache, threads=1)
    assert again.dimension == 384
    assert path.stat().st_mtime_ns == mtime  # loaded, not exported again
    assert [p.name for p in onnx_cache.iterdir()] == [path.name]  # no temporary files left behind


def test_corrupt_cached_onnx_file_is_refused(model_path, onnx_embedder, tmp_path):
    broken = Embedder(model_path, backend="onnx", cache_dir=tmp_path)
    target = broken.onnx_path()
    target.write_bytes(b"not an onnx model")
    with pytest.raises(ModelArtifactError, match="delete the file"):
        broken.encode(["my card was charged twice"])

    # A valid ONNX graph whose probe embeddings were not made from this model (stale or tampered file).
    onnx_embedder.encode(["warm up"])
    import onnx

    proto = onnx.load(str(onnx_embedder.onnx_path()))
    meta = next(p for p in proto.metadata_props if p.key == "deskpilot_embedding")
    info = json.loads(meta.value)
    info["probe_embeddings"][0][0] += 0.01
    meta.value = json.dumps(info)
    onnx.save(proto, str(target))
    with pytest.raises(ModelArtifactError, match="differ from torch"):
        Embedder(model_path, backend="onnx", cache_dir=tmp_path).encode(["my card was charged twice"])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_broken_model_folder_raises(backend, tmp_path, model_path):
    with pytest.raises(ModelArtifactError, match="no sentence-transformers model"):
        Embedder(tmp_path, backend=backend, cache_dir=tmp_path / "cache").encode(["hello"])

    broken = tmp_path / "truncated"
    shutil.copytree(model_path, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md"))
    (broken / "model.safetensors").write_bytes((model_path / "model.safetensors").read_bytes()[:4096])
    with pytest.raises(ModelArtifactError, match="cannot load the embedding model"):
        Embedder(broken, backend=backend, cache_dir=tmp_path / "cache").encode(["hello"])
    assert not list((tmp_path / "cache").glob("*.onnx"))  # nothing half-made is cached


def test_onnx_refuses_models_it_cannot_reproduce(tmp_path, model_path):
    cls = _small_model_copy(model_path, tmp_path / "cls")
    pooling = json.loads((cls / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ModelArtifactError, match="mean Pooling"):
        Embedder(cls, backend="onnx", cache_dir=tmp_path / "cache").encode(["hello"])

    no_tok = _small_model_copy(model_path, tmp_path / "notok")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(ModelArtifactError, match="tokenizer"):
        Embedder(no_tok, backend="onnx", cache_dir=tmp_path / "cache").encode(["hello"])


@pytest.fixture(scope="module")
def int8_embedder(model_path, onnx_cache) -> Embedder:
    return Embedder(model_path, backend="onnx", quantize="int8", cache_dir=onnx_cache, batch_size=32)


def test_int8_is_close_to_float_but_its_own_function(embedder, onnx_embedder, int8_embedder, tickets, onnx_cache):
    texts = tickets[0][:150] + EDGE_TEXTS
    ref = embedder.encode(texts)
    got = int8_embedder.encode(texts)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cos = (got * ref).sum(axis=1)
    assert float(cos.min()) >= INT8_MIN_COSINE and float(cos[:150].mean()) > 0.99
    assert float(np.abs(got - ref).max()) > ONNX_TOLERANCE  # really quantized, not the float file under a new name
    # Another embedding function: its own fingerprint, name and cached file, next to the float export it came from.
    assert int8_embedder.fingerprint != onnx_embedder.fingerprint and "int8" in int8_embedder.name
    assert int8_embedder.onnx_path() != onnx_embedder.onnx_path()
    assert {p.name for p in onnx_cache.glob("*.onnx")} >= {int8_embedder.onnx_path().name, onnx_embedder.onnx_path().name}


def test_models_refuse_an_embedder_of_the_other_precision(onnx_embedder, int8_embedder, tickets):
    text, y = tickets
    float_model = IntentClassifier(embedder=onnx_embedder, seed=7).fit(text[:200], y[:200])
    with pytest.raises(ModelArtifactError, match="embedder mismatch"):
        float_model.set_embedder(int8_embedder)
    int8_model = IntentClassifier(embedder=int8_embedder, seed=7).fit(text[:200], y[:200])
    with pytest.raises(ModelArtifactError, match="embedder mismatch"):
        int8_model.set_embedder(onnx_embedder)
    # and the int8 model still separates the simulator's intents as well as the float one
    acc_int8 = (int8_model.predict(text[200:]) == y[200:]).mean()
    acc_float = (float_model.predict(text[200:]) == y[200:]).mean()
    assert acc_int8 > 0.6 and acc_int8 >= acc_float - 0.05


def test_broken_int8_file_is_refused(model_path, int8_embedder, tmp_path):
    int8_embedder.encode(["warm up"])
    import onnx

    # A float export relabelled as int8 passes no shape check but keeps the metadata of the wrong precision.
    bad = Embedder(model_path, backend="onnx", quantize="int8", cache_dir=tmp_path)
    proto = onnx.load(str(int8_embedder.onnx_path()))
    meta = next(p for p in proto.metadata_props if p.key == "deskpilot_embedding")
    info = json.loads(meta.value)
    info["probe_embeddings"] = [[-v for v in row] for row in info["probe_embeddings"]]  # far from what it computes
    meta.value = json.dumps(info)
    onnx.save(proto, str(bad.onnx_path()))
    with pytest.raises(ModelArtifactError, match="cosine"):
        bad.encode(["my card was charged twice"])
    bad.onnx_path().write_bytes(b"\x00" * 64)
    with pytest.raises(ModelArtifactError, match="delete the file"):
        Embedder(model_path, backend="onnx", quantize="int8", cache_dir=tmp_path).encode(["hello"])


def test_bad_settings_are_named(model_path):
    with pytest.raises(InvalidInput, match="quantize"):
        Embedder(model_path, backend="onnx", quantize="int4")
    with pytest.raises(InvalidInput, match="onnx backend"):
        Embedder(model_path, backend="torch", quantize="int8")
    from pydantic import ValidationError

    from api.settings import Settings

    with pytest.raises(ValidationError, match="DESKPILOT_EMBEDDING_BACKEND=onnx"):
        Settings(embedding_backend="torch", embedding_quantize="int8")
    with pytest.raises(InvalidInput, match="backend"):
        Embedder(model_path, backend="tensorflow")
    with pytest.raises(InvalidInput, match="threads"):
        Embedder(model_path, threads=0)
    with pytest.raises(InvalidInput, match="cpu"):
        Embedder(model_path, backend="onnx", device="cuda")


def test_runs_on_worker_threads_give_the_serial_vectors(model_path, onnx_cache, onnx_embedder, int8_embedder,
                                                        tickets):
    """A call of several runs spreads them over worker threads with a one-thread session: the vectors are bit for bit
    those of every run on the main session (float and int8), so nothing depends on how the runs were dealt."""
    texts = tickets[0][:120] + EDGE_TEXTS
    for quantize in ("none", "int8"):
        serial = Embedder(model_path, backend="onnx", cache_dir=onnx_cache, batch_size=32, threads=1, quantize=quantize)
        spread = Embedder(model_path, backend="onnx", cache_dir=onnx_cache, batch_size=32, threads=2, quantize=quantize)
        a, b = serial.encode(texts), spread.encode(texts)
        assert spread._parallel is True and serial._parallel is False
        assert np.array_equal(a, b)
        alone = np.stack([spread.encode([t])[0] for t in texts[-4:]])  # one run: the main session
        assert float(np.abs(alone - b[-4:]).max()) <= ONNX_TOLERANCE
