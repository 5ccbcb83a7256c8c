"""Which reader a file needs (CSV, XES or Parquet), from its first bytes; other files are refused by name."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

from insight.errors import InvalidEventLog

LogFormat = Literal["csv", "xes", "parquet"]

_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (unzip it first)",
}


def detect_format(path: Path) -> LogFormat:
    """csv / xes / parquet from the file's first bytes (and its name as a tie-breaker); rejects other files."""
    if not path.is_file():
        raise InvalidEventLog("file does not exist", file=str(path))
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        raise InvalidEventLog("file is empty: an event log needs a header and at least one event", file=str(path))
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            try:
                head = gz.read(4096)
            except (OSError, EOFError) as exc:
                raise InvalidEventLog(f"broken gzip file: {exc}", file=str(path)) from exc
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise InvalidEventLog(f"not an event log: the file is {what}", file=str(path))
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith((b"<?xml", b"<log")):
        if b"<log" in head or b"xes" in head.lower():
            return "xes"
        raise InvalidEventLog("XML file that is not an XES event log (no <log> element)", file=str(path))
    if text.startswith((b"{", b"[")):
        raise InvalidEventLog(
            "not an event log: the file is JSON; deskpilot reads CSV, XES or Parquet logs", file=str(path)
        )
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidEventLog("not an event log: binary content (NUL bytes) in a file expected to be CSV",
                              file=str(path))
    return "csv"
