"""The pseudonym key: per install by default (0600 file in the home), stable across restarts, the public one refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import Settings


def test_unset_key_is_generated_once_per_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESKPILOT_PSEUDONYM_KEY", raising=False)
    first = Settings(home=tmp_path / "a").pseudonym_key.get_secret_value()
    again = Settings(home=tmp_path / "a").pseudonym_key.get_secret_value()
    other = Settings(home=tmp_path / "b").pseudonym_key.get_secret_value()
    assert len(first) >= 32 and first == again and first != other
    mode = stat.S_IMODE((tmp_path / "a" / "pseudonym.key").stat().st_mode)
    assert mode == 0o600


def test_a_set_key_is_used_and_nothing_is_written(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, pseudonym_key="my-own-secret-key-0123456789")
    assert s.pseudonym_key.get_secret_value() == "my-own-secret-key-0123456789"
    assert not (tmp_path / "pseudonym.key").exists()


def test_the_public_development_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_PSEUDONYM_KEY", "deskpilot-dev-key-change-me")
    with pytest.raises(ValidationError, match="public development key"):
        Settings(home=tmp_path)
