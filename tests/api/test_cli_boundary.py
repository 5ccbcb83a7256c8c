"""Every command runs behind `api.commands.boundary`: bad input is one line and exit code 2, even without main()."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from api.commands import boundary
from core.errors import InvalidInput


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command("check")
    @boundary
    def check(path: Path = typer.Argument(..., help="A file."), strict: bool = typer.Option(False)) -> None:
        """Refuse a missing file; otherwise print its name."""
        if not path.exists():
            raise InvalidInput(f"file {path} does not exist", field="path")
        typer.echo(f"ok {path.name} strict={strict}")

    @app.command("noop")
    def noop() -> None:
        """Keeps typer in sub-command mode."""

    return app


def test_the_boundary_keeps_the_signature_and_turns_bad_input_into_one_line(tmp_path: Path) -> None:
    (good := tmp_path / "a.csv").write_text("x")
    ok = CliRunner().invoke(_app(), ["check", str(good), "--strict"])
    assert ok.exit_code == 0 and "ok a.csv strict=True" in ok.output, ok.output
    bad = CliRunner().invoke(_app(), ["check", str(tmp_path / "missing.csv")])
    lines = [ln for ln in bad.output.splitlines() if ln.strip()]
    assert bad.exit_code == 2 and len(lines) == 1, bad.output
    assert lines[0].startswith("error (invalid_input):") and "missing.csv" in lines[0]
