"""The streaming XES reader gives the events pm4py's `read_xes` gives: same rows, columns, order, types, times."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidEventLog
from insight.eventlog import read_log
from insight.eventlog.pm4py_bridge import read_xes_frame
from insight.eventlog.readers.xes import (
    _NotFlat,
    _NotPlain,
    _scan,
    _stream,
    _vdates,
    _vframe,
    _vscan,
    parse_xes,
    read_xes_events,
)

# Trace attributes before and after the events, typed attributes (int, float, boolean, id), an int pm4py cannot
# read, an event missing an attribute, an empty trace, an entity, offsets, 'Z' and a naive date.
MIXED = """<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<log xes.version="1.0" xmlns="{ns}">
 <extension name="Concept" prefix="concept" uri="http://www.xes-standard.org/concept.xesext"/>
 <global scope="event"><string key="concept:name" value="name"/></global>
 <string key="concept:name" value="the log"/>
 <trace>
  <string key="concept:name" value="T1"/><int key="priority" value="2"/>
  <event><string key="concept:name" value="Open &amp; log"/><string key="org:resource" value="ann"/>
   <date key="time:timestamp" value="2020-01-01T10:00:00.000+01:00"/><int key="n" value="3"/>
   <boolean key="urgent" value="TRUE"/><float key="cost" value="1.5"/></event>
  <event><string key="concept:name" value="Close"/><date key="time:timestamp" value="2020-01-01T12:00:00Z"/>
   <int key="n" value="x"/><id key="ref" value="r-1"/></event>
  <date key="opened" value="2019-12-31T23:00:00"/>
 </trace>
 <trace><string key="concept:name" value="empty"/><string key="only_here" value="never a column"/></trace>
 <trace>
  <event><string key="org:resource" value="bob"/><string key="concept:name" value="Open"/>
   <date key="time:timestamp" value="2020-01-02T10:00:00.123+05:30"/><string key="note" value="é ü"/></event>
  <string key="concept:name" value="T2"/><int key="priority" value="1"/>
 </trace>
</log>
"""

NESTED = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1.0">
 <trace><string key="concept:name" value="T1"/>
  <event><string key="concept:name" value="Open"/><date key="time:timestamp" value="2020-01-01T10:00:00+00:00"/>
   <string key="meta" value="m"><string key="inner" value="i"/></string></event>
 </trace>
</log>
"""


def _pm4py(path: Path) -> pd.DataFrame:
    import pm4py
    from pm4py.util import constants

    constants.SHOW_PROGRESS_BAR = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pm4py.read_xes(str(path), variant="iterparse")


@pytest.mark.parametrize("ns", ["http://www.xes-standard.org/", "http://www.xes-standard.org", ""])
@pytest.mark.parametrize("gz", [True, False])
def test_streamed_frame_equals_pm4py(tmp_path: Path, ns: str, gz: bool) -> None:
    text = MIXED.replace(' xmlns="{ns}"', f' xmlns="{ns}"' if ns else "").encode()
    p = tmp_path / ("mixed.xes.gz" if gz else "mixed.xes")
    p.write_bytes(gzip.compress(text) if gz else text)
    ours, theirs = parse_xes(p), _pm4py(p)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert list(ours.columns) == list(theirs.columns)
    assert len(ours) == 3 and "case:only_here" not in ours.columns
    assert ours["concept:name"].iloc[0] == "Open & log"
    assert ours["time:timestamp"].iloc[2] == pd.Timestamp("2020-01-02T04:30:00.123", tz="UTC")


def test_scanner_and_lxml_stream_agree_on_escapes_and_whitespace(tmp_path: Path) -> None:
    """Plain text goes through the scanner; references and whitespace in values read as an XML parser reads them."""
    odd = MIXED.replace("{ns}", "").replace('value="Close"', 'value="a&#10;b &lt;c&gt; &quot;d&quot;&#x41;\tz\r\ny"')
    (p := tmp_path / "odd.xes").write_text(odd, encoding="utf-8")
    scanned, streamed = _scan(p), _stream(p)
    assert scanned.values == streamed.values and scanned.keys == streamed.keys
    assert scanned.traces == streamed.traces and scanned.per_event == streamed.per_event
    pd.testing.assert_frame_equal(parse_xes(p), _pm4py(p), check_exact=True)


@pytest.mark.parametrize("change", [
    ("<event>", "<event><!-- note -->"),  # a comment among the traces
    ('<string key="org:resource" value="ann"/>', "<string value='ann' key='org:resource'/>"),  # other quoting
    ("</log>", "</log"),  # not well-formed at the end
])
def test_other_layouts_leave_the_scanner(tmp_path: Path, change: tuple[str, str]) -> None:
    (p := tmp_path / "other.xes").write_text(MIXED.replace("{ns}", "").replace(*change), encoding="utf-8")
    with pytest.raises(_NotPlain):
        _scan(p)
    if change[1] != "</log":
        pd.testing.assert_frame_equal(parse_xes(p), _pm4py(p), check_exact=True)
    else:
        with pytest.raises(InvalidEventLog):
            read_log(p)


def test_nested_attributes_are_left_to_pm4py(tmp_path: Path) -> None:
    (p := tmp_path / "nested.xes").write_text(NESTED, encoding="utf-8")
    with pytest.raises(_NotFlat):
        parse_xes(p)
    pd.testing.assert_frame_equal(read_xes_events(p), _pm4py(p))


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    data = gzip.compress(MIXED.replace("{ns}", "").encode() * 20)
    (p := tmp_path / "cut.xes.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidEventLog) as err:
        read_log(p)
    assert "truncated" in str(err.value) and "cut.xes.gz" in str(err.value)


def test_broken_xml_names_the_file(tmp_path: Path) -> None:
    (p := tmp_path / "broken.xes").write_text(NESTED.replace("</event>", "</evnt>"), encoding="utf-8")
    with pytest.raises(InvalidEventLog) as err:
        read_log(p)
    assert "broken.xes" in str(err.value) and "XMLSyntaxError" in str(err.value)


@pytest.mark.realdata
@pytest.mark.parametrize("rel", [
    "helpdesk/Helpdesk.xes.gz",
    "helpdesk/rama2021_split/test_Helpdesk.xes.gz",
    "bpic2013/rama2021_split/test_bpi_challenge_2013_incidents.xes.gz",
])
def test_public_logs_identical_to_pm4py(shared_data: Path, rel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same raw frame as pm4py's read_xes, and read_log gives the canonical log the pm4py path gave before."""
    from insight.eventlog.readers import xes

    p = shared_data / "process_logs" / rel
    pd.testing.assert_frame_equal(_vframe(_vscan(p)), read_xes_frame(p), check_exact=True)  # the fast path
    log = read_log(p)
    monkeypatch.setattr(xes, "read_xes_events", read_xes_frame)
    before = read_log(p)
    pd.testing.assert_frame_equal(log.df, before.df, check_exact=True)
    assert log.case_attributes == before.case_attributes
    assert log.quality is not None and before.quality is not None
    assert [(f.name, f.rows) for f in log.quality.fixes] == [(f.name, f.rows) for f in before.quality.fixes]


@pytest.mark.parametrize("ns", ["http://www.xes-standard.org/", ""])
def test_vector_scanner_gives_pm4py_frame(tmp_path: Path, ns: str) -> None:
    """The canonical layout is read by the numpy/Arrow scanner itself (not a fallback), with pm4py's frame."""
    text = MIXED.replace(' xmlns="{ns}"', f' xmlns="{ns}"' if ns else "")
    (p := tmp_path / "mixed.xes").write_text(text, encoding="utf-8")
    pd.testing.assert_frame_equal(_vframe(_vscan(p)), _pm4py(p), check_exact=True)


@pytest.mark.parametrize("change", [
    ('<string key="org:resource"', '<string  key="org:resource"'),  # two spaces
    ("<event>", "<event >"),  # a space in a bare tag
    ('value="ann"/>', 'value="ann" />'),  # a space before '/>'
    ('value="Close"', 'value="a > b"'),  # '>' in a value
    ('<trace>\n  <string key="concept:name" value="T1"/>', '<trace>\n  <string key="concept:name" value="T1"></string>'),
])
def test_vector_scanner_leaves_other_spellings(tmp_path: Path, change: tuple[str, str]) -> None:
    text = MIXED.replace("{ns}", "")
    assert change[0] in text
    (p := tmp_path / "other.xes").write_text(text.replace(*change), encoding="utf-8")
    with pytest.raises(_NotPlain):
        _vscan(p)
    pd.testing.assert_frame_equal(parse_xes(p), _pm4py(p), check_exact=True)


DATES = [
    "2011-10-01T00:38:44.546+02:00", "2011-10-01T00:38:44+02:00", "2020-02-29T23:59:59Z", "2020-02-29T23:59:59.5Z",
    "2013-09-27T16:03:13-03:30", "1999-12-31T23:00:00", "2012-07-30T07:55:06.000+00:00", "2012-07-30T07:55:06.123456Z",
    "2012-07-30T07:55:06.12345+01:00", "1970-01-01T00:00:00.000+01:00", "2026-03-01T00:00:00.1-14:00",
]


@pytest.mark.parametrize("extra", [[], ["2012-07-30T07:55:06.1234567Z"], ["2012-07-30 07:55:06"], [None]])
def test_vector_dates_match_pandas(extra: list[str | None]) -> None:
    import pyarrow as pa

    values = DATES + extra
    ours = _vdates(pa.array(values, pa.string()), "t")
    theirs = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601", utc=True).astype("datetime64[us, UTC]")
    pd.testing.assert_series_equal(ours, theirs, check_exact=True)


@pytest.mark.parametrize("bad", ["2019-02-29T10:00:00Z", "2019-13-01T10:00:00Z", "2019-01-01T24:00:00Z", "soon"])
def test_vector_dates_refuse_what_pandas_refuses(bad: str) -> None:
    import pyarrow as pa

    with pytest.raises(_NotFlat):
        _vdates(pa.array([*DATES, bad], pa.string()), "t")


def test_vector_scanner_reads_a_log_without_attributes(tmp_path: Path) -> None:
    (p := tmp_path / "bare.xes").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<log>\n<trace>\n<event>\n</event>\n</trace>\n</log>\n', encoding="utf-8")
    ours = _vframe(_vscan(p))
    assert ours.shape == (1, 0)
    pd.testing.assert_frame_equal(ours, _pm4py(p), check_exact=True)
