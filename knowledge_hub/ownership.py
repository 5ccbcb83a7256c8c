"""One writer for an embedded chroma store: the process that opens it holds an exclusive lock until it closes it.

Embedded chroma (a `PersistentClient` on a folder) keeps part of its index in memory and is not safe to share between
processes: a second process writing the folder left the first one answering `Error finding id`. So the process that
opens the store (the API server, or a `deskpilot kb` command when no server runs) takes an exclusive `flock` on
`<store>.lock` and writes who it is into the file. The kernel drops the lock when the process ends in any way
(kill -9 included), so a lock is never stale: the file's content is only trusted while its lock is held.

Within one process the store may be opened many times (chroma shares one client per folder in a process); the lock
is counted and released when the last opener closes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import IndexUnavailable

ROLES = ("server", "cli")


@dataclass(frozen=True)
class Holder:
    """Who holds a store: process id, role ("server" or "cli"), its command line, since when, and the server's URL."""

    pid: int
    role: str
    command: str
    started_at: float
    url: str | None = None

    def describe(self) -> str:
        """E.g. 'a deskpilot server (pid 4242, http://127.0.0.1:8000)'."""
        what = "a deskpilot server" if self.role == "server" else f"`{self.command}`"
        return f"{what} (pid {self.pid}{', ' + self.url if self.url else ''})"


class IndexBusy(IndexUnavailable):
    """The store is held by another process (see `holder`)."""

    def __init__(self, message: str, *, holder: Holder | None) -> None:
        super().__init__(message)
        self.holder = holder


_held: dict[str, list[Any]] = {}  # lock path -> [fd, count, Holder]
_guard = threading.Lock()


def lock_path_for(store: Path) -> Path:
    """The lock file of a store folder: a sibling named `<folder>.lock`."""
    return store.parent / f"{store.name}.lock"


def _read(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 65536, 0)
        data = json.loads(raw.decode("utf-8")) if raw else None
        return Holder(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def holder_of(store: Path) -> Holder | None:
    """The process holding the store now (None when nobody does; a file left by a dead process is ignored)."""
    path = lock_path_for(store)
    key = str(path.resolve()) if path.exists() else str(path)
    with _guard:
        if key in _held:
            h: Holder = _held[key][2]
            return h
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(20):  # the holder may be between truncating and writing its details
                found = _read(fd)
                if found is not None:
                    return found
                time.sleep(0.05)
            return Holder(pid=0, role="unknown", command="another process", started_at=0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class IndexLease:
    """This process's hold on a store; `release()` (or leaving the `with` block) gives it up."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._released = False

    def release(self) -> None:
        """Give up this hold (the lock itself goes when the process's last hold does)."""
        if self._released:
            return
        self._released = True
        with _guard:
            entry = _held.get(self.key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del _held[self.key]
                with contextlib.suppress(OSError):
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])

    def __enter__(self) -> IndexLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(store: Path, *, role: str, url: str | None = None) -> IndexLease:
    """Hold the store for this process, or raise IndexBusy naming the process that holds it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    path = lock_path_for(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return IndexLease(key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = None
        else:
            me = Holder(pid=os.getpid(), role=role, command=" ".join(["deskpilot", *sys.argv[1:3]]) if role == "cli"
                        else "deskpilot serve", started_at=time.time(), url=url)
            data = json.dumps(asdict(me)).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            _held[key] = [fd, 1, me]
            return IndexLease(key)
    other = holder_of(store)
    who = other.describe() if other is not None else "another process"
    raise IndexBusy(f"the knowledge-base index at {store} is in use by {who}", holder=other)


def wait_and_acquire(store: Path, *, role: str, on_wait: Any = None, stop_if: Any = None,
                     poll_seconds: float = 0.5) -> IndexLease:
    """`acquire`, retrying while the holder is another process; `on_wait(holder)` is called once when waiting starts,
    and `stop_if(holder)` returning True ends the wait with IndexBusy (e.g. the holder is a server to go through)."""
    told = False
    while True:
        try:
            return acquire(store, role=role)
        except IndexBusy as busy:
            if stop_if is not None and stop_if(busy.holder):
                raise
            if not told and on_wait is not None:
                on_wait(busy.holder)
                told = True
        time.sleep(poll_seconds)


SERVE_FILE = "serve.json"


def write_serve_file(home: Path, *, url: str) -> Path:
    """Record where the server of this home listens (read by `deskpilot kb` to send its writes there)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / SERVE_FILE
    tmp = home / f".{SERVE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "started_at": time.time()}), encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_serve_file(home: Path) -> None:
    """Remove the serve file if it is this process's."""
    path = home / SERVE_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def server_url(home: Path, holder: Holder) -> str | None:
    """The URL of the server holding a home's store: its own record, else the home's serve file when that file was
    written by the same process (or its parent: `serve` with uvicorn's worker processes)."""
    if holder.url:
        return holder.url
    try:
        data = json.loads((home / SERVE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if pid == holder.pid or pid == _parent_pid(holder.pid):
        url = data.get("url")
        return str(url) if url else None
    return None


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
