"""One process holds an embedded store: an exclusive lock that names its holder and never goes stale (kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knowledge_hub.ownership import (
    Holder,
    IndexBusy,
    acquire,
    holder_of,
    server_url,
    write_serve_file,
)

REPO = Path(__file__).resolve().parents[2]


def _holder_process(store: Path, role: str = "server") -> subprocess.Popen[str]:
    code = ("import sys, time; from pathlib import Path; from knowledge_hub.ownership import acquire; "
            f"lease = acquire(Path({str(store)!r}), role={role!r}); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_store_held_by_another_process_is_refused_naming_it_and_freed_by_kill_9(tmp_path):
    store = tmp_path / "chroma"
    proc = _holder_process(store)
    try:
        with pytest.raises(IndexBusy) as busy:
            acquire(store, role="cli")
        assert busy.value.holder is not None and busy.value.holder.pid == proc.pid
        assert busy.value.holder.role == "server" and f"pid {proc.pid}" in str(busy.value)
        assert holder_of(store) == busy.value.holder
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # The lock file (with the dead holder's details) is still there, but its lock went with the process.
    assert json.loads((tmp_path / "chroma.lock").read_text())["pid"] == proc.pid
    assert holder_of(store) is None
    with acquire(store, role="cli") as lease:
        assert lease is not None and holder_of(store).pid == os.getpid()
    assert holder_of(store) is None


def test_one_process_may_open_its_store_many_times(tmp_path):
    store = tmp_path / "chroma"
    first = acquire(store, role="server")
    second = acquire(store, role="cli")  # the same process: counted, not refused
    first.release()
    assert holder_of(store) is not None and holder_of(store).role == "server"
    second.release()
    second.release()  # releasing twice is harmless
    assert holder_of(store) is None


def test_the_server_url_comes_from_the_holder_or_its_serve_file(tmp_path):
    write_serve_file(tmp_path, url="http://127.0.0.1:8123")
    me = Holder(pid=os.getpid(), role="server", command="deskpilot serve", started_at=time.time())
    assert server_url(tmp_path, me) == "http://127.0.0.1:8123"
    someone_else = Holder(pid=os.getpid() + 100000, role="server", command="deskpilot serve", started_at=0.0)
    assert server_url(tmp_path, someone_else) is None  # a serve file left by another (dead) process is not trusted
    assert server_url(tmp_path, Holder(pid=1, role="server", command="x", started_at=0, url="http://h:1")) == "http://h:1"
