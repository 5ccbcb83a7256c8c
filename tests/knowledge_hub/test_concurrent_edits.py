"""Two edits of one article at the same time: one wins, the other gets 409 (Conflict), never a 500; every answer
reports the version its own edit stored. On a SQLite file and on the real PostgreSQL; ids past 64 bits are 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from core.errors import Conflict, NotFound
from knowledge_hub import service
from knowledge_hub.models import Article, ArticleCreate, ArticleStatus, ArticleUpdate, ArticleVersion

TABLES = [Article.__table__, ArticleVersion.__table__]  # type: ignore[attr-defined]
DRAFT = ArticleCreate(title="Refund a damaged item", body="Ask for a photo, then refund the original card.",
                      tags=["billing"], intents=["refund"], status=ArticleStatus.draft)


class RecordingIndex:
    """The index protocol, recording what it was asked to store (drafts never reach it)."""

    def __init__(self) -> None:
        self.upserts: list[tuple[int, int]] = []

    def upsert_article(self, *, article_id: int, version: int, **_: Any) -> int:
        self.upserts.append((article_id, version))
        return 1

    def remove_article(self, article_id: int) -> None:
        pass


def _engine_sqlite(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'kb.db'}", connect_args={"timeout": 5})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = _engine_sqlite(tmp_path)
    else:
        eng = create_engine(request.getfixturevalue("pg_schema_url"))
    SQLModel.metadata.create_all(eng, tables=TABLES)
    yield eng
    eng.dispose()


def _create(engine: Engine, index: RecordingIndex) -> int:
    with Session(engine, expire_on_commit=False) as s:
        a = service.create(session=s, index=index, article_in=DRAFT, author="km")
        assert a.id is not None
        return a.id


def test_a_competing_edit_gets_409_with_the_current_version(engine: Engine) -> None:
    index = RecordingIndex()
    aid = _create(engine, index)
    with Session(engine, expire_on_commit=False) as slow, Session(engine, expire_on_commit=False) as fast:
        # The slow editor read version 1 before the fast one wrote (held, as a request holds it until it commits).
        stale = service.get(session=slow, article_id=aid)
        won = service.update(session=fast, index=index, article_id=aid, article_in=ArticleUpdate(title="Fast"),
                             author="a")
        assert won.version == 2
        with pytest.raises(Conflict) as err:
            service.update(session=slow, index=index, article_id=aid, article_in=ArticleUpdate(title="Slow"),
                           author="b")
        assert "version 2" in str(err.value) and stale.id == aid
    with Session(engine) as s:
        versions = [v.title for v in s.exec(select(ArticleVersion).where(ArticleVersion.article_id == aid)
                                             .order_by(ArticleVersion.version)).all()]
        assert versions == ["Refund a damaged item", "Fast"]  # nothing lost, nothing half-written
        assert service.get(session=s, article_id=aid).title == "Fast"


def test_the_answer_is_the_version_this_edit_stored(engine: Engine) -> None:
    index = RecordingIndex()
    aid = _create(engine, index)

    landed: list[int] = []

    def other_edit_lands_right_after(_session: Session) -> None:
        if landed:
            return
        landed.append(1)
        with Session(engine, expire_on_commit=False) as other:
            service.update(session=other, index=index, article_id=aid, article_in=ArticleUpdate(title="Second"),
                           author="b")

    with Session(engine, expire_on_commit=False) as first:
        event.listen(first, "after_commit", other_edit_lands_right_after)
        answer = service.update(session=first, index=index, article_id=aid, article_in=ArticleUpdate(title="First"),
                                author="a")
    assert (answer.version, answer.title) == (2, "First")
    with Session(engine) as s:
        assert (service.get(session=s, article_id=aid).version, service.get(session=s, article_id=aid).title) == (
            3, "Second")


@pytest.mark.parametrize("huge", [2**63, 2**64 + 5, 0, -1])
def test_ids_out_of_range_are_not_found(tmp_path: Path, huge: int) -> None:
    eng = _engine_sqlite(tmp_path)
    SQLModel.metadata.create_all(eng, tables=TABLES)
    index = RecordingIndex()
    aid = _create(eng, index)
    with Session(eng) as s:
        with pytest.raises(NotFound):
            service.get(session=s, article_id=huge)
        with pytest.raises(NotFound):
            service.restore_version(session=s, index=index, article_id=aid, version=huge, author="km")
    eng.dispose()
