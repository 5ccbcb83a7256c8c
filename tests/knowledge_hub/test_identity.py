"""A home refuses a second database: the CLI, `serve` and the app name both databases in one line."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine

from knowledge_hub.identity import HomeDatabaseMismatch, bind_home
from tests.api.conftest import run_cli


def _engine(path):
    return create_engine(f"sqlite:///{path}")


def test_a_home_records_its_database_and_refuses_another(tmp_path):
    home = tmp_path / "home"
    first, second = _engine(tmp_path / "a.db"), _engine(tmp_path / "b.db")
    me = bind_home(engine=first, home=home)
    record = json.loads((home / "database.json").read_text())
    assert record["database_id"] == me.id and record["database"].endswith("a.db")
    assert bind_home(engine=first, home=home) == me  # the same database again: fine
    with pytest.raises(HomeDatabaseMismatch) as refused:
        bind_home(engine=second, home=home)
    assert "a.db" in str(refused.value) and "b.db" in str(refused.value)
    # The second database keeps its own id: it cannot be passed off as the first one later.
    with pytest.raises(HomeDatabaseMismatch):
        bind_home(engine=second, home=home)


def test_the_same_database_emptied_keeps_its_home(tmp_path):
    home = tmp_path / "home"
    me = bind_home(engine=_engine(tmp_path / "a.db"), home=home)
    (tmp_path / "a.db").unlink()  # recreated at the same URL: the same database, emptied
    assert bind_home(engine=_engine(tmp_path / "a.db"), home=home).id == me.id


def test_cli_and_serve_refuse_a_second_database_in_one_line(tmp_path, monkeypatch, capfd):
    home = tmp_path / "home"
    bind_home(engine=_engine(tmp_path / "a.db"), home=home)
    env = {"DESKPILOT_HOME": str(home), "DESKPILOT_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    for argv in (["kb", "check"], ["kb", "export", str(tmp_path / "out")], ["serve", "--port", "1"]):
        code, out, err = run_cli(argv, monkeypatch, capfd, env=env)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (argv, err)
        assert "a.db" in lines[0] and "b.db" in lines[0] and str(home) in lines[0]
    assert not (tmp_path / "out").exists()


def test_serve_refuses_several_workers_on_an_embedded_index(tmp_path, monkeypatch, capfd):
    code, _, err = run_cli(["serve", "--workers", "2"], monkeypatch, capfd, env={"DESKPILOT_HOME": str(tmp_path)})
    assert code == 2 and "DESKPILOT_CHROMA_URL" in err and len(err.strip().splitlines()) == 1


def test_the_app_refuses_a_second_database(tmp_path):
    from api.settings import Settings
    from tests.api.conftest import start_api

    bind_home(engine=_engine(tmp_path / "a.db"), home=tmp_path)
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(HomeDatabaseMismatch):
        start_api(settings, bundle_loader=lambda s, e: None)


def test_a_postgres_database_keeps_its_home_and_a_sqlite_one_is_refused(tmp_path, pg_schema_url):
    pg = create_engine(pg_schema_url)
    try:
        me = bind_home(engine=pg, home=tmp_path)
        assert "test_" in json.loads((tmp_path / "database.json").read_text())["database"]
        assert bind_home(engine=pg, home=tmp_path).id == me.id
    finally:
        pg.dispose()
    with pytest.raises(HomeDatabaseMismatch, match="postgresql"):
        bind_home(engine=_engine(tmp_path / "a.db"), home=tmp_path)
