"""Every bad file given to the CLI gets one line naming the file and where it broke, and exit code 2."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.api.conftest import run_cli

XES_BOTH_TIMESTAMPS = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1.0">
<trace><string key="concept:name" value="c1"/>
<event><string key="concept:name" value="Open"/><date key="time:timestamp" value="2024-01-01T10:00:00+00:00"/>
<date key="timestamp" value="2023-05-05T10:00:00+00:00"/></event>
<event><string key="concept:name" value="Close"/><date key="time:timestamp" value="2024-01-02T10:00:00+00:00"/>
<date key="timestamp" value="2023-05-06T10:00:00+00:00"/></event>
</trace>
</log>
"""


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    xes = gzip.compress(XES_BOTH_TIMESTAMPS.encode() * 50)
    (p := tmp_path / "truncated.xes.gz").write_bytes(xes[: len(xes) // 2])
    out["truncated.xes.gz"] = p
    (p := tmp_path / "truncated.json").write_text('{"articles": [{"title": "Refund"', encoding="utf-8")
    out["truncated.json"] = p
    (p := tmp_path / "shape.json").write_text("[1, 2, 3]", encoding="utf-8")
    out["shape.json"] = p
    (p := tmp_path / "binary.json").write_bytes(bytes(range(128, 256)) * 20)
    out["binary.json"] = p
    (p := tmp_path / "front.md").write_text("---\ntitle: [unclosed\n---\nbody", encoding="utf-8")
    out["front.md"] = p
    return out


@pytest.mark.parametrize(("command", "name", "says"), [
    (["ingest"], "truncated.xes.gz", "truncated"),
    (["kb", "import"], "truncated.json", "line 1"),
    (["kb", "import"], "shape.json", "item 0"),
    (["kb", "import"], "binary.json", "not UTF-8"),
    (["kb", "import"], "front.md", "front matter"),
])
def test_bad_file_is_one_line_and_exit_2(command: list[str], name: str, says: str, bad_files: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    code, _, err = run_cli([*command, str(bad_files[name])], monkeypatch, capfd,
                           env={"DESKPILOT_HOME": str(tmp_path / "home")})
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0] and says in lines[0], lines[0]


def test_xes_with_timestamp_and_time_timestamp_reads(tmp_path: Path) -> None:
    """XES `time:timestamp` is the event time; an event attribute called `timestamp` is kept beside it."""
    from insight.eventlog import read_log

    (p := tmp_path / "both.xes").write_text(XES_BOTH_TIMESTAMPS, encoding="utf-8")
    log = read_log(p)
    assert len(log.df) == 2
    assert str(log.df["timestamp"].iloc[0]).startswith("2024-01-01")
    assert str(log.df["timestamp_attribute"].iloc[0]).startswith("2023-05-05")
