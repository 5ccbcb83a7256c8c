"""Accounts without a browser: argon2 hashes, lock-out, session versions, the `deskpilot users` commands, the session
key file, and the queue / claim service on a real routed home (in-memory SQLite, the tiny real model)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, SQLModel, create_engine
from sqlmodel.pool import StaticPool

from api.web import accounts
from core.errors import Conflict, InvalidInput, NotFound
from tests.api.conftest import Api, run_cli, start_api

LOCK = timedelta(minutes=15)


@pytest.fixture()
def session() -> Session:
    import api.auth  # noqa: F401  (tables)
    import routing.models  # noqa: F401

    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    SQLModel.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as s:
        yield s


def test_password_is_stored_as_an_argon2id_hash(session: Session) -> None:
    accounts.create_user(session=session, username="ann", password="correct horse battery", role="agent")
    row = session.exec(accounts.select(accounts.User)).one()
    assert row.password_hash.startswith("$argon2id$") and "correct horse" not in row.password_hash
    assert accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=5,
                            lockout=LOCK).user is not None


def test_bad_input_is_named(session: Session) -> None:
    with pytest.raises(InvalidInput, match="password must be at least 10"):
        accounts.create_user(session=session, username="ann", password="short", role="agent")
    with pytest.raises(InvalidInput, match="role 'boss' is unknown"):
        accounts.create_user(session=session, username="ann", password="long enough pw", role="boss")
    with pytest.raises(InvalidInput, match="username"):
        accounts.create_user(session=session, username="ann smith", password="long enough pw", role="agent")
    accounts.create_user(session=session, username="ann", password="long enough pw", role="agent")
    with pytest.raises(Conflict, match="already exists"):
        accounts.create_user(session=session, username="ann", password="long enough pw", role="agent")
    with pytest.raises(NotFound):
        accounts.set_role(session=session, username="nobody", role="agent")


def test_lockout_after_repeated_failures_even_for_the_right_password(session: Session) -> None:
    accounts.create_user(session=session, username="ann", password="correct horse battery", role="agent")
    for _ in range(2):
        out = accounts.sign_in(session=session, username="ann", password="wrong-wrong", max_failed=3, lockout=LOCK)
        assert out.user is None and out.reason == "wrong username or password"
    assert accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=3,
                            lockout=LOCK).user is not None  # a success resets the count
    for _ in range(3):
        accounts.sign_in(session=session, username="ann", password="wrong-wrong", max_failed=3, lockout=LOCK)
    out = accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=3,
                           lockout=LOCK)
    assert out.user is None and "locked" in (out.reason or "")
    assert accounts.get_user(session=session, username="ann").locked
    accounts.set_password(session=session, username="ann", password="a new password!")
    assert accounts.sign_in(session=session, username="ann", password="a new password!", max_failed=3,
                            lockout=LOCK).user is not None


def test_disable_role_change_and_new_password_end_sessions(session: Session) -> None:
    user = accounts.create_user(session=session, username="ann", password="correct horse battery", role="agent")
    first = accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=5,
                             lockout=LOCK)
    assert accounts.session_user(session=session, user_id=user.id, session_version=first.session_version)
    accounts.set_role(session=session, username="ann", role="analyst")
    assert accounts.session_user(session=session, user_id=user.id, session_version=first.session_version) is None
    again = accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=5,
                             lockout=LOCK)
    assert again.user is not None and again.user.role == "analyst"
    accounts.set_disabled(session=session, username="ann", disabled=True)
    assert accounts.session_user(session=session, user_id=user.id, session_version=again.session_version) is None
    out = accounts.sign_in(session=session, username="ann", password="correct horse battery", max_failed=5,
                           lockout=LOCK)
    assert out.user is None and "disabled" in (out.reason or "")


def test_users_cli_add_list_set_role_disable_passwd(tmp_path, monkeypatch, capfd) -> None:
    import io
    import sys

    env = {"DESKPILOT_HOME": str(tmp_path)}

    def cli(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return run_cli(list(argv), monkeypatch, capfd, env=env)

    code, out, err = cli("users", "add", "bob", "--role", "agent", "--password-stdin", stdin="bob-password-1\n")
    assert code == 0 and "created user 'bob' with role agent" in out
    code, out, err = cli("users", "add", "bob", "--role", "agent", "--password-stdin", stdin="bob-password-1\n")
    assert code == 2 and "already exists" in err
    code, out, err = cli("users", "passwd", "bob", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 10 characters" in err
    assert cli("users", "set-role", "bob", "analyst")[0] == 0
    assert cli("users", "disable", "bob")[0] == 0
    code, out, _ = cli("users", "list")
    assert code == 0 and "bob" in out and "analyst" in out and "disabled" in out
    code, _, err = cli("users", "disable", "nobody")
    assert code == 2 and "no user named 'nobody'" in err


def test_web_session_key_is_generated_once_per_install_owner_only(tmp_path) -> None:
    from api.settings import install_secret

    key = install_secret(tmp_path, "web-session.key", "DESKPILOT_WEB_SECRET_KEY", "web session key")
    assert install_secret(tmp_path, "web-session.key", "DESKPILOT_WEB_SECRET_KEY", "web session key") == key
    assert stat.S_IMODE(os.stat(tmp_path / "web-session.key").st_mode) == 0o600


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API test app: a tiny real model, in-memory SQLite, a key per role."""
    from api.settings import Settings
    from tests.routing.tiny_triage import train_tiny_bundle

    bundle = train_tiny_bundle()
    # No ticket is confident enough to auto-route: every one is left to people (suggest or triage).
    settings = Settings(home=tmp_path_factory.mktemp("home"), database_url="sqlite://", auto_route_confidence=1.0)
    app, client, keys = start_api(settings, bundle_loader=lambda s, e: bundle)
    try:
        yield Api(app=app, client=client, keys=keys)
    finally:
        client.__exit__(None, None, None)


def test_queue_claims_and_handled_tickets(routed: Api) -> None:
    from routing import queue
    from routing.models import FeedbackIn, QueueFilter
    from routing.service import add_feedback
    from tests.api.conftest import new_id

    api = routed
    ids = []
    for text in ("refund my double charge", "cannot log in to my account", "where is my parcel"):
        tid = new_id("Q")
        r = api.client.post("/v1/tickets/route", headers=api.h("helpdesk"),
                            json={"ticket_id": tid, "subject": text, "body": text})
        assert r.status_code == 201
        ids.append((tid, r.json()["result"]["decision"]))
    with Session(api.app.state.engine, expire_on_commit=False) as s:
        page = queue.list_queue(session=s, queue_filter=QueueFilter(limit=1000))
        listed = {i.ticket_id for i in page.items}
        for tid, decision in ids:
            assert (tid in listed) == (decision in ("triage", "suggest"))
        waiting = [tid for tid, d in ids if d in ("triage", "suggest")]
        assert waiting, ids
        tid = waiting[0]
        queue.claim_ticket(session=s, ticket_id=tid, by="ann")
        with pytest.raises(Conflict, match="already claimed by 'ann'"):
            queue.claim_ticket(session=s, ticket_id=tid, by="bob")
        mine = queue.list_queue(session=s, queue_filter=QueueFilter(claimed="mine", limit=1000), by="ann")
        assert [i.ticket_id for i in mine.items] == [tid] and mine.items[0].claimed_by == "ann"
        with pytest.raises(Conflict, match="only they can release"):
            queue.release_ticket(session=s, ticket_id=tid, by="bob")
        queue.release_ticket(session=s, ticket_id=tid, by="bob", force=True)
        assert queue.get_claim(session=s, ticket_id=tid).claimed_by is None
        add_feedback(session=s, ticket_id=tid, feedback_in=FeedbackIn(comment="looked at it"), by="ann")
        open_now = queue.list_queue(session=s, queue_filter=QueueFilter(limit=1000))
        assert tid not in {i.ticket_id for i in open_now.items}
        with_handled = queue.list_queue(session=s, queue_filter=QueueFilter(include_handled=True, limit=1000))
        assert next(i for i in with_handled.items if i.ticket_id == tid).handled
        with pytest.raises(NotFound):
            queue.claim_ticket(session=s, ticket_id="no-such-ticket", by="ann")
