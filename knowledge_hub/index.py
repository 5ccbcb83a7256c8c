"""The vector index of published articles in chromadb, plus Markdown chunking.

Embeddings are always computed here with `core.embedding.Embedder` and passed to chroma explicitly: chroma's
default embedding function would download a model at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from core.errors import IndexUnavailable, InvalidInput
from knowledge_hub.models import Passage

_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


class TextEncoder(Protocol):
    """What the index needs from an embedder (core.embedding.Embedder satisfies it)."""

    @property
    def name(self) -> str: ...

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class Chunk:
    """A piece of an article body: its section number, chunk number within the section, heading and text."""

    section: int
    chunk: int
    heading: str
    text: str


def chunk_markdown(body: str, *, max_chars: int = 1200) -> list[Chunk]:
    """Split Markdown into sections at headings, then split long sections at paragraph boundaries."""
    if max_chars < 100:
        raise InvalidInput(f"max_chars must be >= 100, got {max_chars}", field="max_chars")
    sections: list[tuple[str, list[str]]] = [("", [])]
    in_code = False
    for line in body.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        m = None if in_code else _HEADING.match(line)
        if m:
            sections.append((m.group(2).strip(), []))
        else:
            sections[-1][1].append(line)
    out: list[Chunk] = []
    sec_no = 0
    for heading, lines in sections:
        text = "\n".join(lines).strip()
        if not text and not heading:
            continue
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()] or [heading]
        # Paragraphs longer than the limit are cut at sentence ends so no chunk grows unbounded.
        parts = (part for p in paragraphs for part in ([p] if len(p) <= max_chars else _split_long(p, max_chars)))
        for i, piece in enumerate(_pack(parts, max_chars, "\n\n")):
            out.append(Chunk(section=sec_no, chunk=i, heading=heading, text=piece))
        sec_no += 1
    return out


def check_body_length(body: str | None, *, limit: int, where: str = "body") -> None:
    """Refuse a body longer than `limit` characters (InvalidInput naming where and the limit).

    Storing a published article embeds all of its text in the request that stores it, so its length bounds the
    work one request can ask for.
    """
    if body is not None and len(body) > limit:
        raise InvalidInput(f"{where}: {len(body):,} characters is over the limit of {limit:,} "
                           "(DESKPILOT_KB_MAX_BODY_CHARS); split the article", field="body", limit=limit)


def _pack(parts: Iterable[str], max_chars: int, sep: str) -> list[str]:
    """Consecutive parts joined by `sep` into as few pieces as fit in `max_chars` each, in order (a part longer
    than the limit is a piece of its own)."""
    out: list[str] = []
    cur = ""
    for part in parts:
        if cur and len(cur) + len(sep) + len(part) > max_chars:
            out.append(cur)
            cur = part
        else:
            cur = f"{cur}{sep}{part}" if cur else part
    if cur:
        out.append(cur)
    return out


def _split_long(text: str, max_chars: int) -> list[str]:
    """A long paragraph cut at sentence ends; a sentence longer than the limit is cut every `max_chars`."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    parts = (s[i:i + max_chars] for s in sentences for i in range(0, max(len(s), 1), max_chars))
    return _pack(parts, max_chars, " ")


def content_hash(text: str) -> str:
    """Hash of a text that is embedded (stored next to its vector, so the check can tell what the vector is of)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def embedded_text(title: str, chunk: Chunk) -> str:
    """The text a passage's vector is computed from: the article title, the section heading and the chunk."""
    return f"{title}\n\n{chunk.heading}\n{chunk.text}" if chunk.heading else f"{title}\n\n{chunk.text}"


def _join(values: list[str]) -> str:
    # chroma metadata holds scalars only; "|a|b|" keeps membership tests exact.
    return "|" + "|".join(v.replace("|", "/") for v in values) + "|" if values else ""


def _split(value: Any) -> list[str]:
    return [v for v in str(value or "").split("|") if v]


@dataclass
class _Batch:
    """Passages of a group of articles, ready to embed and store."""

    ids: list[str]
    texts: list[str]
    documents: list[str]
    metas: list[dict[str, Any]]


@dataclass(frozen=True)
class ArticleDoc:
    """What the index needs of one published article version."""

    article_id: int
    version: int
    title: str
    body: str
    intents: list[str]
    tags: list[str]
    status: str = "published"


@dataclass(frozen=True)
class IndexedArticle:
    """What the index holds for one article: its version and the content hash of every passage and of the title.

    `passage_hashes` are in (section, chunk) order; a hash is None when the stored document no longer hashes to the
    value recorded when it was embedded (the text shown to users is not the text the vector is of).
    """

    version: int
    passage_hashes: tuple[str | None, ...]
    title_hash: str | None


@dataclass
class IndexSnapshot:
    """Everything in the index at one revision, in memory, for exact hybrid scoring."""

    revision: int
    passages: list[Passage]
    passage_vectors: np.ndarray  # (n, d) unit vectors of "title + passage"
    title_vectors: np.ndarray  # (n, d) unit vector of each passage's article title
    write_token: str = ""  # the token of the write this snapshot follows (see KnowledgeIndex._bump_revision)


class KnowledgeIndex:
    """chromadb collection of published passages (embedded PersistentClient by path, or HttpClient by URL)."""

    def __init__(
        self,
        *,
        embedder: TextEncoder,
        path: str | Path | None = None,
        url: str | None = None,
        collection: str = "deskpilot_kb",
        max_chars: int = 1200,
    ) -> None:
        if (path is None) == (url is None):
            raise InvalidInput("give exactly one of path (embedded chroma) or url (chroma server)", field="path/url")
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.url = url
        self.collection_name = collection
        self.max_chars = max_chars
        self._client: Any = None
        self._lock = threading.RLock()
        self._snapshot: IndexSnapshot | None = None
        self._lease: Any = None  # knowledge_hub.ownership.IndexLease when opened by open_index(role=...)

    def close(self) -> None:
        """Let go of this process's hold on an embedded store (other processes may then open it)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    # -- chroma plumbing -------------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            try:
                if self.url is not None:
                    u = urlparse(self.url)
                    self._client = chromadb.HttpClient(
                        host=u.hostname or "localhost",
                        port=u.port or (443 if u.scheme == "https" else 8000),
                        ssl=u.scheme == "https",
                        settings=settings,
                    )
                else:
                    assert self.path is not None
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            except Exception as exc:  # chroma raises many types; callers need one
                raise IndexUnavailable(f"cannot open chroma at {self.url or self.path}: {exc}") from exc
        return self._client

    def _collections(self) -> tuple[Any, Any]:
        client = self._get_client()
        meta = {"embedding_model": self.embedder.name, "revision": 0}
        try:
            passages = client.get_or_create_collection(
                self.collection_name, metadata=meta, configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
            titles = client.get_or_create_collection(
                f"{self.collection_name}_titles", metadata={"embedding_model": self.embedder.name},
                configuration={"hnsw": {"space": "cosine"}}, embedding_function=None,
            )
        except Exception as exc:
            raise IndexUnavailable(f"cannot open collection {self.collection_name!r}: {exc}") from exc
        return passages, titles

    def _bump_revision(self, col: Any) -> None:
        # chroma has no atomic increment: two writers (replicas on one chroma server) may both read n and write
        # n + 1. The counter is then one short, but each write also leaves a token of its own, and readers reload
        # when the token changes, so no write can hide behind another's bump.
        meta = dict(col.metadata or {})
        meta["revision"] = int(meta.get("revision", 0)) + 1
        meta["write_token"] = secrets.token_hex(8)
        meta["embedding_model"] = meta.get("embedding_model", self.embedder.name)
        col.modify(metadata=meta)
        self._snapshot = None

    # -- public API ------------------------------------------------------------------------------------------
    @property
    def stored_model(self) -> str | None:
        """Embedding model name recorded in the collection (None for an empty new collection)."""
        col, _ = self._collections()
        return (col.metadata or {}).get("embedding_model")

    def needs_reindex(self) -> bool:
        """True when the collection was embedded with a different model than the current embedder."""
        return self.stored_model not in (None, self.embedder.name)

    @property
    def revision(self) -> int:
        """Counter bumped on every write (lets readers in other processes notice changes)."""
        col, _ = self._collections()
        return int((col.metadata or {}).get("revision", 0))

    def passages_for(self, title: str, body: str) -> list[Chunk]:
        """The chunks an article body is indexed as."""
        return chunk_markdown(body, max_chars=self.max_chars) or [Chunk(0, 0, "", title)]

    def upsert_article(
        self, *, article_id: int, version: int, title: str, body: str, intents: list[str], tags: list[str],
        status: str = "published",
    ) -> int:
        """Replace an article's passages with freshly embedded chunks of this version; returns the passage count."""
        return self.upsert_articles([ArticleDoc(article_id, version, title, body, list(intents), list(tags), status)])

    def expected(self, title: str, body: str) -> tuple[tuple[str, ...], str]:
        """The content hashes an article's passages and title get when indexed (what the check compares)."""
        return (tuple(content_hash(embedded_text(title, c)) for c in self.passages_for(title, body)),
                content_hash(title))

    def upsert_articles(
        self, docs: list[ArticleDoc], *, progress: Callable[[int], None] | None = None, batch_texts: int = 256,
    ) -> int:
        """Replace several articles' passages with freshly embedded chunks; returns the passage count.

        Articles are embedded and written in groups of about `batch_texts` texts (memory stays bounded, and
        `progress(articles_in_group)` is called as each group is stored). A group is written to chroma on a second
        thread while the next one is embedded. The revision is bumped once, at the end (also after a failure, so
        what was written is seen by every reader).
        """
        if not docs:
            return 0
        groups: list[list[ArticleDoc]] = [[]]
        size = 0
        for d in docs:
            if size >= batch_texts:
                groups.append([])
                size = 0
            groups[-1].append(d)
            size += len(self.passages_for(d.title, d.body)) + 1
        total = 0
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-index-write") as writer:
                pending: tuple[Future[int], int] | None = None
                for g in groups:
                    batch = self._prepare(g)
                    vecs = self.embedder.encode(batch.texts + [d.title for d in g])
                    if pending is not None:
                        total += pending[0].result()
                        if progress is not None:
                            progress(pending[1])
                    pending = (writer.submit(self._store, g, batch, vecs), len(g))
                if pending is not None:
                    total += pending[0].result()
                    if progress is not None:
                        progress(pending[1])
        finally:
            with self._lock, contextlib.suppress(Exception):
                self._bump_revision(self._collections()[0])
        return total

    def _prepare(self, docs: list[ArticleDoc]) -> _Batch:
        batch = _Batch([], [], [], [])
        for d in docs:
            for c in self.passages_for(d.title, d.body):
                text = embedded_text(d.title, c)
                batch.ids.append(f"{d.article_id}:{c.section}:{c.chunk}")
                batch.texts.append(text)
                batch.documents.append(c.text)
                batch.metas.append({
                    "article_id": int(d.article_id), "version": int(d.version), "title": d.title, "status": d.status,
                    "intents": _join(d.intents), "tags": _join(d.tags), "section": c.section, "chunk": c.chunk,
                    "heading": c.heading, "hash": content_hash(text),
                })
        return batch

    def _store(self, docs: list[ArticleDoc], batch: _Batch, vecs: np.ndarray) -> int:
        n = len(batch.texts)
        with self._lock:
            col, titles = self._collections()
            try:
                col.delete(where={"article_id": {"$in": [int(d.article_id) for d in docs]}})
                for start in range(0, n, 2000):  # chroma caps the batch size of one add
                    col.add(ids=batch.ids[start:start + 2000], embeddings=vecs[start:min(start + 2000, n)],
                            documents=batch.documents[start:start + 2000], metadatas=batch.metas[start:start + 2000])
                titles.upsert(ids=[str(d.article_id) for d in docs], embeddings=vecs[n:], documents=[d.title for d in docs],
                              metadatas=[{"article_id": int(d.article_id), "version": int(d.version),
                                          "hash": content_hash(d.title)} for d in docs])
                self._snapshot = None
            except Exception as exc:
                which = ", ".join(str(d.article_id) for d in docs[:10])
                raise IndexUnavailable(f"index write failed for article(s) {which}: {exc}") from exc
        return n

    def remove_article(self, article_id: int) -> None:
        """Drop an article's passages (unpublish, archive, delete)."""
        with self._lock:
            col, titles = self._collections()
            try:
                col.delete(where={"article_id": int(article_id)})
                titles.delete(ids=[str(article_id)])
                self._bump_revision(col)
            except Exception as exc:
                raise IndexUnavailable(f"index delete failed for article {article_id}: {exc}") from exc

    def indexed_versions(self) -> dict[int, int]:
        """article_id -> version currently in the index."""
        col, _ = self._collections()
        got = col.get(include=["metadatas"])
        out: dict[int, int] = {}
        for m in got["metadatas"] or []:
            out[int(m["article_id"])] = int(m["version"])
        return out

    def indexed_articles(self) -> dict[int, IndexedArticle]:
        """article_id -> its version and content hashes in the index (hashes recomputed from the stored texts)."""
        col, titles = self._collections()
        got = col.get(include=["metadatas", "documents"])
        parts: dict[int, list[tuple[int, int, str | None]]] = {}
        versions: dict[int, int] = {}
        for doc, m in zip(got["documents"] or [], got["metadatas"] or [], strict=True):
            aid = int(m["article_id"])
            versions[aid] = int(m["version"])
            stored = str(m.get("hash") or "")
            shown = content_hash(embedded_text(str(m.get("title", "")),
                                               Chunk(0, 0, str(m.get("heading", "")), doc or "")))
            parts.setdefault(aid, []).append((int(m.get("section", 0)), int(m.get("chunk", 0)),
                                              stored if stored == shown else None))
        tgot = titles.get(include=["metadatas", "documents"])
        title_hash: dict[int, str | None] = {}
        for tid, doc, m in zip(tgot["ids"], tgot["documents"] or [], tgot["metadatas"] or [], strict=True):
            stored = str((m or {}).get("hash") or "")
            title_hash[int(tid)] = stored if stored == content_hash(doc or "") else None
        return {aid: IndexedArticle(version=versions[aid],
                                    passage_hashes=tuple(h for _, _, h in sorted(p, key=lambda x: (x[0], x[1]))),
                                    title_hash=title_hash.get(aid))
                for aid, p in parts.items()}

    def reset(self) -> None:
        """Drop both collections and recreate them stamped with the current embedding model."""
        with self._lock:
            client = self._get_client()
            for name in (self.collection_name, f"{self.collection_name}_titles"):
                # An absent collection has nothing to drop.
                with contextlib.suppress(Exception):
                    client.delete_collection(name)
            self._snapshot = None
            self._collections()

    def count(self) -> int:
        """Number of passages in the index."""
        col, _ = self._collections()
        return int(col.count())

    def snapshot(self) -> IndexSnapshot:
        """All passages with their vectors, reloaded from chroma only when the revision changed."""
        with self._lock:
            col, titles = self._collections()
            rev = int((col.metadata or {}).get("revision", 0))
            token = str((col.metadata or {}).get("write_token", ""))
            if self._snapshot is not None and (self._snapshot.revision, self._snapshot.write_token) == (rev, token):
                return self._snapshot
            got = col.get(include=["embeddings", "documents", "metadatas"])
            tgot = titles.get(include=["embeddings"])
            dim = 0
            emb = got["embeddings"]
            passage_vecs = np.asarray(emb, dtype=np.float32) if emb is not None and len(emb) else None
            if passage_vecs is not None:
                dim = passage_vecs.shape[1]
            title_by_article = {
                int(i): np.asarray(v, dtype=np.float32)
                for i, v in zip(tgot["ids"], tgot["embeddings"] if tgot["embeddings"] is not None else [], strict=False)
            }
            passages: list[Passage] = []
            title_rows: list[np.ndarray] = []
            for i, (doc, m) in enumerate(zip(got["documents"] or [], got["metadatas"] or [], strict=True)):
                aid = int(m["article_id"])
                passages.append(Passage(
                    article_id=aid, version=int(m["version"]), title=str(m["title"]), text=doc or "",
                    section=int(m.get("section", 0)), chunk=int(m.get("chunk", 0)), heading=str(m.get("heading", "")),
                    intents=_split(m.get("intents")), tags=_split(m.get("tags")),
                ))
                assert passage_vecs is not None
                title_rows.append(title_by_article.get(aid, passage_vecs[i]))
            self._snapshot = IndexSnapshot(
                revision=rev,
                write_token=token,
                passages=passages,
                passage_vectors=passage_vecs if passage_vecs is not None else np.zeros((0, dim), np.float32),
                title_vectors=np.vstack(title_rows) if title_rows else np.zeros((0, dim), np.float32),
            )
            return self._snapshot

    @classmethod
    def from_path(cls, path: str | Path, *, embedder: TextEncoder, collection: str = "deskpilot_kb") -> KnowledgeIndex:
        """Embedded chroma stored in a folder."""
        return cls(embedder=embedder, path=path, collection=collection)

    @classmethod
    def from_url(cls, url: str, *, embedder: TextEncoder, collection: str = "deskpilot_kb") -> KnowledgeIndex:
        """A chroma server at http(s)://host:port."""
        return cls(embedder=embedder, url=url, collection=collection)


def kb_embedder(settings: Any, *, shared: Any = None) -> Any:
    """The knowledge hub's embedder: `settings.kb_embedding_model_path` with the embedding_* settings.

    `shared` (the routing embedder) is reused when it is the same model folder, so one model is loaded once.
    ModelArtifactError, naming the set-up step, when the folder holds no model (nothing is downloaded here).
    """
    from core.embedding import Embedder
    from core.errors import ModelArtifactError

    path = Path(settings.kb_embedding_model_path)
    same = shared is not None and getattr(shared, "model_path", None) is not None
    if same and Path(shared.model_path).resolve() == path.resolve():
        return shared
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelArtifactError(
            f"the knowledge hub's embedding model folder {path} holds no sentence-transformers model; run "
            "`make kb-model` (or `python -m core.embedding.fetch`) to assemble all-mpnet-base-v2 there, or set "
            "DESKPILOT_KB_EMBEDDING_MODEL to a model folder", path=str(path))
    # The hub's own model runs in float: int8 (embedding_quantize) is routing's throughput setting, and the hub's
    # stronger model does not keep its vectors under int8 (the embedder's probe refuses it).
    return Embedder(path, **{**settings.embedder_kwargs, "quantize": "none"})


def open_index(*, settings: Any, embedder: TextEncoder, role: str | None = None) -> KnowledgeIndex:
    """Index from a settings object with `chroma_url` (server) or `chroma_path` (embedded); opens it eagerly.

    With `role` ("server" or "cli") an embedded store is held for this process (knowledge_hub.ownership): IndexBusy
    names the other process when it holds it; `close()` the index to let go. A chroma server needs no hold.
    """
    url = getattr(settings, "chroma_url", None)
    if url:
        index = KnowledgeIndex.from_url(url, embedder=embedder)
    else:
        lease = None
        if role is not None:
            from knowledge_hub.ownership import acquire

            lease = acquire(Path(settings.chroma_path), role=role)
        index = KnowledgeIndex.from_path(settings.chroma_path, embedder=embedder)
        index._lease = lease
    try:
        index.count()  # fail at start-up, not at the first request, when chroma is unreachable
    except BaseException:
        index.close()
        raise
    return index
