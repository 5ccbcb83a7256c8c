"""Which database a home's vector index belongs to: a home refuses a second database instead of "repairing" it.

SQL is the truth the index is repaired from, so an index must only ever be compared with the database it was built
from: a second database pointed at the same home would make start-up "repair" the shared index into its own articles,
and the first service would then answer another database's text under its own ids. The first time a home is used,
the database gets a random id (stored in the database itself, table `deskpilot_meta`) and the home records that id
with the database's URL (password hidden) in `HOME/database.json`. Later, a database with another id is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from core.errors import Conflict

RECORD = "database.json"
_meta = MetaData()
META = Table("deskpilot_meta", _meta, Column("key", String(64), primary_key=True), Column("value", String(256)))


class HomeDatabaseMismatch(Conflict):
    """The home's index was built from another database."""


@dataclass(frozen=True)
class DatabaseIdentity:
    """A database's random id and its URL with the password hidden."""

    id: str
    url: str


def shown_url(engine: Engine) -> str:
    """The engine's URL without its password."""
    return engine.url.render_as_string(hide_password=True)


def _read_id(engine: Engine) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(select(META.c.value).where(META.c.key == "database_id")).first()
    return str(row[0]) if row else None


def database_identity(engine: Engine, *, adopt: str | None = None) -> DatabaseIdentity:
    """The database's id, created on first use (`adopt`: the id to give a database that has none yet)."""
    _meta.create_all(engine, checkfirst=True)
    found = _read_id(engine)
    if found is None:
        # Another process may store one at the same moment: then theirs is read back.
        with contextlib.suppress(IntegrityError), engine.begin() as conn:
            conn.execute(insert(META).values(key="database_id", value=adopt or uuid.uuid4().hex))
        found = _read_id(engine)
    assert found is not None
    return DatabaseIdentity(id=found, url=shown_url(engine))


def _read_record(home: Path) -> DatabaseIdentity | None:
    try:
        data = json.loads((home / RECORD).read_text(encoding="utf-8"))
        return DatabaseIdentity(id=str(data["database_id"]), url=str(data["database"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HomeDatabaseMismatch(f"{home / RECORD} is unreadable ({exc}); it records which database this home "
                                   "belongs to: fix or delete it") from exc


def bind_home(*, engine: Engine, home: Path) -> DatabaseIdentity:
    """Check that `home` belongs to this database (recording it the first time); HomeDatabaseMismatch otherwise.

    A database with no id yet at the URL the home recorded (the same database, emptied or recreated) takes the
    home's id; at any other URL it is another database and is refused.
    """
    recorded = _read_record(home)
    url = shown_url(engine)
    me = database_identity(engine, adopt=recorded.id if recorded is not None and recorded.url == url else None)
    if recorded is None:
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{RECORD}.{os.getpid()}"
        tmp.write_text(json.dumps({"database_id": me.id, "database": me.url, "recorded_at": time.time()}),
                       encoding="utf-8")
        try:
            os.link(tmp, home / RECORD)  # atomic create-if-absent: the first process to record wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        recorded = _read_record(home)
        assert recorded is not None
    if recorded.id != me.id:
        raise HomeDatabaseMismatch(
            f"home {home} belongs to database {recorded.url} (id {recorded.id[:8]}), not to {me.url} "
            f"(id {me.id[:8]}); use another DESKPILOT_HOME for this database, or set DESKPILOT_DATABASE_URL back",
            home=str(home), recorded=recorded.url, database=me.url,
        )
    return me
