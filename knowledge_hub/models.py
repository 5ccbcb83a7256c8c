"""Knowledge-hub data: articles and their versions in SQL (the truth), and typed retrieval results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.jsonbody import JsonBody


def utcnow() -> datetime:
    """Timezone-aware current UTC time (stored as naive UTC by SQLite, aware by PostgreSQL)."""
    return datetime.now(UTC)


class ArticleStatus(StrEnum):
    """Lifecycle of an article; only published articles are in the vector index."""

    draft = "draft"
    in_review = "in_review"  # submitted for review (knowledge_hub.review); not searchable, not editable
    published = "published"
    archived = "archived"


class ArticleBase(SQLModel):
    """Fields an author writes."""

    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", description="Markdown")
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    intents: list[str] = Field(default_factory=list, sa_type=JSON)
    activities: list[str] = Field(default_factory=list, sa_type=JSON)


class Article(ArticleBase, table=True):
    """The current state of an article."""

    __tablename__ = "kb_article"

    id: int | None = Field(default=None, primary_key=True)
    status: ArticleStatus = Field(default=ArticleStatus.draft, index=True)
    author: str = ""
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Set when an index write failed after the SQL change was committed; consistency.repair clears it.
    index_stale: bool = Field(default=False, index=True)


class ArticleVersion(ArticleBase, table=True):
    """An immutable snapshot of an article's content, one per edit (create, update, restore)."""

    __tablename__ = "kb_article_version"
    __table_args__ = (UniqueConstraint("article_id", "version", name="uq_kb_article_version"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(index=True)
    version: int
    status: ArticleStatus = ArticleStatus.draft
    author: str = ""
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class ArticleCreate(ArticleBase, JsonBody):
    """Input for creating an article (drafts by default)."""

    status: ArticleStatus = ArticleStatus.draft


class ArticleUpdate(SQLModel, JsonBody):
    """Partial update: only the fields that are set change."""

    title: str | None = Field(default=None, min_length=1, max_length=500)
    body: str | None = None
    tags: list[str] | None = None
    intents: list[str] | None = None
    activities: list[str] | None = None


class ArticlePublic(ArticleBase):
    """An article as returned to callers."""

    id: int
    status: ArticleStatus
    author: str
    version: int
    created_at: datetime
    updated_at: datetime
    index_stale: bool = False


class ArticleVersionPublic(ArticleBase):
    """One stored version as returned to callers."""

    article_id: int
    version: int
    status: ArticleStatus
    author: str
    note: str
    created_at: datetime


@dataclass(frozen=True)
class Passage:
    """One indexed chunk of a published article."""

    article_id: int
    version: int
    title: str
    text: str
    section: int = 0
    chunk: int = 0
    heading: str = ""
    intents: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchHit:
    """A retrieved passage with its fused score and the parts it came from."""

    passage: Passage
    score: float
    dense_score: float
    lexical_score: float
    rank: int

    @property
    def article_id(self) -> int:
        """Id of the article the passage belongs to."""
        return self.passage.article_id

    @property
    def version(self) -> int:
        """Article version the passage was indexed from."""
        return self.passage.version

    @property
    def title(self) -> str:
        """Title of the article."""
        return self.passage.title
