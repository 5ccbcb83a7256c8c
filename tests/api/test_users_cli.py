"""`deskpilot users ...` runs behind the commands' boundary: bad input is one line naming it and exit code 2, even
when the command runs without `api.cli.main` (its last boundary)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.commands import users as users_cmd
from api.settings import get_settings


def _app() -> typer.Typer:
    app = typer.Typer()
    users_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root (makes `users` a sub-command)."""

    return app


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DESKPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DESKPILOT_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def _run(*args: str, stdin: str | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(_app(), ["users", *args], input=stdin)
    return result.exit_code, [ln for ln in result.output.splitlines() if ln.strip()]


@pytest.mark.parametrize(("args", "stdin", "code", "says"), [
    (("add", "bob", "--role", "wizard", "--password-stdin"), "bob-password-1\n", "invalid_input", "wizard"),
    (("add", "bob", "--role", "agent", "--password-stdin"), "short\n", "invalid_input", "at least"),
    (("add", "Bob Smith!", "--role", "agent", "--password-stdin"), "bob-password-1\n", "invalid_input", "username"),
    (("disable", "ghost"), None, "not_found", "ghost"),
    (("enable", "ghost"), None, "not_found", "ghost"),
    (("passwd", "ghost", "--password-stdin"), "ghost-password-1\n", "not_found", "ghost"),
    (("set-role", "ghost", "agent"), None, "not_found", "ghost"),
])
def test_bad_input_to_a_users_command_is_one_line_and_exit_2(
        home: Path, args: tuple[str, ...], stdin: str | None, code: str, says: str) -> None:
    exit_code, lines = _run(*args, stdin=stdin)
    assert exit_code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error ({code}):") and says in lines[0], lines[0]


def test_users_commands_work_and_refuse_a_duplicate_behind_the_boundary(home: Path) -> None:
    assert _run("add", "bob", "--role", "agent", "--password-stdin", stdin="bob-password-1\n")[0] == 0
    exit_code, lines = _run("add", "bob", "--role", "agent", "--password-stdin", stdin="bob-password-1\n")
    assert exit_code == 2 and len(lines) == 1 and lines[0].startswith("error (conflict):"), lines
    exit_code, lines = _run("set-role", "bob", "root")
    assert exit_code == 2 and len(lines) == 1 and "root" in lines[0], lines
    assert _run("set-role", "bob", "analyst")[0] == 0
    exit_code, lines = _run("list")
    assert exit_code == 0 and any("bob" in ln and "analyst" in ln for ln in lines), lines
