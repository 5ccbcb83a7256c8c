"""The CSV reader maps the file into memory instead of copying it; every encoding, compression and line-end case
reads (or fails) exactly as it did from the file's bytes."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from core.errors import InvalidEventLog
from insight.eventlog import read_log
from insight.eventlog.readers import csv_file

TEXT = "Case ID,Activity,Complete Timestamp,Note\n" + "".join(
    f"C{i // 4},Stép {i % 4},2024-01-0{1 + i % 9} 10:{i % 60:02d}:00,n{i}\n" for i in range(400))


@pytest.mark.parametrize("kind", ["utf8", "bom", "utf16", "cp1252", "gzip", "crlf", "bare_cr", "quoted", "ragged",
                                  "header_only", "empty_lines_first"])
def test_mapped_read_equals_read_bytes(tmp_path, monkeypatch, kind):
    text = TEXT
    if kind == "crlf":
        text = text.replace("\n", "\r\n")
    elif kind == "bare_cr":
        text = text.replace("\n", "\r")
    elif kind == "quoted":
        text = text.replace("n1,", '"n,1",')
    elif kind == "ragged":
        text = text.replace("n7\n", "n7,extra\n")
    elif kind == "header_only":
        text = text.splitlines(keepends=True)[0]
    elif kind == "empty_lines_first":
        text = "\n\n" + text
    data = {"bom": b"\xef\xbb\xbf" + text.encode(), "utf16": text.encode("utf-16"),
            "cp1252": text.encode("cp1252"), "gzip": gzip.compress(text.encode())}.get(kind, text.encode())
    p = tmp_path / ("log.csv.gz" if kind == "gzip" else "log.csv")
    p.write_bytes(data)

    def outcome():
        try:
            log = read_log(p)
        except InvalidEventLog as exc:
            return str(exc)
        return log

    mapped = outcome()
    monkeypatch.setattr(csv_file, "_file_bytes", lambda path: path.read_bytes())
    copied = outcome()
    if isinstance(mapped, str) or isinstance(copied, str):
        assert mapped == copied
        return
    pd.testing.assert_frame_equal(mapped.df, copied.df, check_exact=True)
    assert mapped.quality is not None and copied.quality is not None
    assert mapped.quality.to_dict() == copied.quality.to_dict()


def test_an_empty_file_is_refused_as_before(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    assert csv_file._file_bytes(p) == b""
    with pytest.raises(InvalidEventLog):
        read_log(p)
