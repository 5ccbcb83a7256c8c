"""One writer for the embedded index: `deskpilot kb import` next to a running server goes through the server.

A real `deskpilot serve` subprocess on a home (SQLite file, embedded chroma), a real `deskpilot kb import` subprocess
of a few hundred articles, and searches and assist requests answered by the server meanwhile: never a 5xx, and the
index agrees with SQL afterwards. Then the server is killed with SIGKILL: its lock goes with it, and the next command
holds the index itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session

REPO = Path(__file__).resolve().parents[2]
ADMIN = "dpk_test-admin-key-for-the-one-writer-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _articles(n: int) -> list[dict[str, object]]:
    from insight.simulate.knowledge import knowledge_base

    base = knowledge_base()
    out = []
    for i in range(n):
        a = base[i % len(base)]
        out.append({"title": f"{a.title} (note {i})", "body": f"{a.body}\n\nCase note {i}: seen on order {1000 + i}.",
                    "intents": list(a.intents), "tags": [*a.tags, "bulk"], "status": "published",
                    "author": "help-centre"})
    return out


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKPILOT_")}
    env.update({"DESKPILOT_HOME": str(home), "DESKPILOT_LOG_LEVEL": "WARNING", "DESKPILOT_BOOTSTRAP_ADMIN_KEY": ADMIN,
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
                # the bundled MiniLM for the hub too (tests/conftest.py): this test is about one writer, not the model
                "DESKPILOT_KB_EMBEDDING_MODEL": os.environ["DESKPILOT_KB_EMBEDDING_MODEL"]})
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


@pytest.mark.slow
def test_kb_import_goes_through_the_running_server(tmp_path):
    home = tmp_path / "home"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(_cli("serve", "--port", str(port)), cwd=REPO, env=_env(home), stdout=log,
                              stderr=subprocess.STDOUT)
    h = {"Authorization": f"Bearer {ADMIN}"}
    http = httpx.Client(base_url=url, headers=h, timeout=60)
    try:
        deadline = time.monotonic() + 300
        while True:  # up, with the index open
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if http.get("/v1/kb/search", params={"q": "refund"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not open its index"
            time.sleep(0.5)
        assert json.loads((home / "serve.json").read_text())["url"] == url
        seeded = http.post("/v1/kb/import", json={"articles": _articles(3)})
        assert seeded.status_code == 201, seeded.text
        db = create_engine(f"sqlite:///{home / 'deskpilot.db'}")
        from routing.models import Ticket

        with Session(db) as session:
            session.add(Ticket(ticket_id="T-one-writer", subject="Charged twice",
                               body="I was charged twice for my order, please refund one payment.",
                               payload_hash="0" * 64))
            session.commit()

        file = tmp_path / "articles.json"
        file.write_text(json.dumps(_articles(300)[3:]))
        cli = subprocess.Popen(_cli("kb", "import", str(file)), cwd=REPO, env=_env(home),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        statuses: list[tuple[str, int, str]] = []
        while cli.poll() is None:
            for path, params in (("/v1/kb/search", {"q": "refund a double charge", "k": "5"}),
                                 ("/v1/tickets/T-one-writer/assist", {})):
                r = http.get(path, params=params)
                statuses.append((path, r.status_code, r.text[:300]))
        out, err = cli.communicate()
        assert cli.returncode == 0, err
        assert f"imported 297 articles from {file} through the server at {url}" in out
        assert err.strip() == ""  # no progress bar when standard error is not a terminal
        failures = [s for s in statuses if s[1] >= 500 and not (s[1] == 503 and '"overloaded"' in s[2])]
        assert failures == [], failures[:5]
        assert sum(1 for s in statuses if s[1] == 200) >= 2, statuses[:5]

        cons = http.get("/v1/kb/consistency").json()
        assert cons["ok"] is True and cons["published"] == 300, cons
        hit = http.get("/v1/kb/search", params={"q": "Case note 250 order 1250", "mode": "lexical", "k": "1"}).json()
        assert hit and hit[0]["title"].endswith("(note 250)")
        with db.connect() as conn:
            keys = conn.execute(text("SELECT revoked_at FROM api_key WHERE name LIKE 'deskpilot-kb-cli-%'")).all()
        assert len(keys) == 1 and keys[0][0] is not None  # the command's own key, revoked when it ended
        db.dispose()

        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        # serve.json is left behind, but the lock went with the process: the command holds the index itself.
        assert (home / "serve.json").exists()
        check = subprocess.run(_cli("kb", "check"), cwd=REPO, env=_env(home), capture_output=True, text=True,
                               timeout=600)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "published in SQL: 300" in check.stdout and "index consistent with SQL" in check.stdout
    finally:
        http.close()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        log.close()
