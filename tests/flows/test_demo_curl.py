"""The demo's printed example request names the admin key by a shell expression, never by its value."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from api.commands.demo import _demo_key, demo_key_ref, example_curl
from api.settings import Settings


def _run_with_printing_curl(command: str, env: dict[str, str] | None = None) -> list[str]:
    # The printed command as a user would paste it into bash, with `curl` replaced by a function printing its
    # arguments one per line: what curl would have been given.
    script = "curl() { printf '%s\\n' \"$@\"; }\n" + command
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=env)
    return out.stdout.splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_printed_curl_reads_the_key_file_and_does_not_carry_the_key(tmp_path):
    settings = Settings(home=tmp_path / "a home with spaces")
    key = _demo_key(settings)
    key_ref, where = demo_key_ref(settings)
    command = example_curl(base="http://127.0.0.1:8000", key_ref=key_ref)
    assert key not in command and key not in where
    assert str(settings.home / "demo-api-key") in where
    args = _run_with_printing_curl(command)
    assert f"X-API-Key: {key}" in args
    assert "http://127.0.0.1:8000/v1/tickets/route" in args


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_printed_curl_names_the_bootstrap_variable_when_the_key_comes_from_it(tmp_path):
    secret = "dpk_" + "x" * 43
    settings = Settings(home=tmp_path, bootstrap_admin_key=secret)
    assert _demo_key(settings) == secret
    key_ref, where = demo_key_ref(settings)
    command = example_curl(base="http://127.0.0.1:8000", key_ref=key_ref)
    assert secret not in command and "DESKPILOT_BOOTSTRAP_ADMIN_KEY" in where
    args = _run_with_printing_curl(command, env={"DESKPILOT_BOOTSTRAP_ADMIN_KEY": secret, "PATH": "/usr/bin:/bin"})
    assert f"X-API-Key: {secret}" in args
