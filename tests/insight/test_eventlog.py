"""Event-log reading, mapping, timestamps, cleaning rules, merging, writing and bad-input errors."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from core.errors import InvalidEventLog
from insight.eventlog import (
    ACTIVITY,
    CASE_ID,
    PM4PY_COLUMNS,
    RESOURCE,
    TIMESTAMP,
    EventLog,
    clean,
    from_pm4py,
    ingest,
    load_activity_map,
    merge_sources,
    read_log,
    to_pm4py,
    write_log,
)

CSV = (
    "Case ID,Activity,Complete Timestamp,Resource,priority,note\n"
    "c1,Open,2012/10/9 14:50:17,Ann,high,first\n"
    "c1,Assign,2012/10/9 14:51:01,Bob,high,second\n"
    "c2,Open,2012/10/10 08:00:00,Ann,low,third\n"
    "c1,Close,2012/10/9 15:00:00,Bob,high,fourth\n"
)


def _write(tmp_path, name, text, *, encoding="utf-8", gz=False):
    p = tmp_path / name
    data = text.encode(encoding)
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


def _utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# ---------------------------------------------------------------- reading


def test_auto_detected_mapping_is_recorded(tmp_path):
    log = read_log(_write(tmp_path, "a.csv", CSV))
    assert list(log.df.columns[:4]) == [CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE]
    assert log.n_events == 4 and log.n_cases == 2
    assert log.df[TIMESTAMP].iloc[0] == _utc("2012-10-09 14:50:17")
    fix = next(f for f in log.quality.fixes if f.name == "column_mapping")
    assert fix.detail.startswith("auto-detected") and "'Case ID'->case_id" in fix.detail
    assert any("auto-detected" in w for w in log.quality.warnings)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, sep):
    log = read_log(_write(tmp_path, "a.csv", CSV.replace(",", sep)))
    assert log.n_events == 4 and log.df.loc[1, ACTIVITY] == "Assign"


def test_bom_and_gzip_give_the_same_log(tmp_path):
    plain = read_log(_write(tmp_path, "a.csv", CSV)).df
    bom = read_log(_write(tmp_path, "b.csv", "\ufeff" + CSV)).df
    gz = read_log(_write(tmp_path, "c.csv.gz", "\ufeff" + CSV, gz=True)).df
    pd.testing.assert_frame_equal(plain, bom)
    pd.testing.assert_frame_equal(plain, gz)


def test_non_utf8_source_is_decoded_with_warning(tmp_path):
    p = _write(tmp_path, "l.csv", CSV.replace("Ann", "Zoë"), encoding="cp1252")
    log = read_log(p)
    assert "Zoë" in set(log.df[RESOURCE])
    assert any("not UTF-8" in w for w in log.quality.warnings)


def test_explicit_mapping(tmp_path):
    text = "ticket;step;when;agent\nT1;new;2020-01-01 10:00:00;x\nT1;done;2020-01-01 11:00:00;y\n"
    log = read_log(_write(tmp_path, "m.csv", text),
                   mapping={"ticket": CASE_ID, "step": ACTIVITY, "when": TIMESTAMP, "agent": RESOURCE})
    assert log.df[CASE_ID].tolist() == ["T1", "T1"]
    fix = next(f for f in log.quality.fixes if f.name == "column_mapping")
    assert fix.detail.startswith("given") and "'step'->activity" in fix.detail


def test_day_first_dates(tmp_path):
    text = "case,activity,timestamp\nA,x,29/2/2016 01:16\nA,y,5/3/2016 12:00\n"
    log = read_log(_write(tmp_path, "d.csv", text))
    assert log.df[TIMESTAMP].tolist() == [_utc("2016-02-29 01:16"), _utc("2016-03-05 12:00")]


def test_ambiguous_dates_follow_dayfirst_and_warn(tmp_path):
    text = "case,activity,timestamp\nA,x,5/3/2016 12:00\n"
    p = _write(tmp_path, "d.csv", text)
    month = read_log(p)
    assert month.df[TIMESTAMP].iloc[0] == _utc("2016-05-03 12:00")
    assert any("ambiguous" in w for w in month.quality.warnings)
    day = read_log(p, dayfirst=True)
    assert day.df[TIMESTAMP].iloc[0] == _utc("2016-03-05 12:00")


def test_iso_offsets_become_utc(tmp_path):
    text = "case,activity,timestamp\nA,x,2010-03-31T15:59:42+01:00\nA,y,2010-04-01T01:00:00-05:00\nA,z,2010-04-02T00:00:00Z\n"
    log = read_log(_write(tmp_path, "i.csv", text))
    assert log.df[TIMESTAMP].tolist() == [
        _utc("2010-03-31 14:59:42"), _utc("2010-04-01 06:00:00"), _utc("2010-04-02 00:00:00")
    ]


def test_naive_times_get_source_zone(tmp_path):
    text = "case,activity,timestamp\nA,x,2012-07-01 12:00:00\nA,y,2012-01-01 12:00:00\n"
    log = read_log(_write(tmp_path, "t.csv", text), source_tz="Europe/Rome")
    # summer time +02:00, winter time +01:00
    assert log.df[TIMESTAMP].tolist() == [_utc("2012-07-01 10:00"), _utc("2012-01-01 11:00")]


def test_duplicate_header_names_are_renamed_with_warning(tmp_path):
    text = "case,activity,timestamp,Variant,Variant\nA,x,2012-01-01 10:00:00,v1,v1\n"
    log = read_log(_write(tmp_path, "v.csv", text))
    assert {"Variant", "Variant_2"} <= set(log.df.columns)
    assert any("duplicate column name 'Variant'" in w for w in log.quality.warnings)


def test_na_values_and_numeric_attributes(tmp_path):
    text = "case,activity,timestamp,count,who\nA,x,2012-01-01 10:00:00,3,?\nA,y,2012-01-01 11:00:00,?,bob\n"
    log = read_log(_write(tmp_path, "n.csv", text), na_values=["?"])
    assert log.df["who"].isna().tolist() == [True, False]
    assert pd.api.types.is_numeric_dtype(log.df["count"]) and log.df["count"].iloc[0] == 3
    assert log.df["count"].isna().tolist() == [False, True]


def test_minimal_xes(tmp_path):
    xes = """<?xml version="1.0" encoding="UTF-8" ?>
<log xes.version="1.0" xmlns="http://www.xes-standard.org/">
 <trace><string key="concept:name" value="T1"/><string key="channel" value="mail"/>
  <event><string key="concept:name" value="Open"/><string key="org:resource" value="ann"/>
   <date key="time:timestamp" value="2020-01-01T10:00:00.000+01:00"/></event>
  <event><string key="concept:name" value="Close"/><string key="org:resource" value="bob"/>
   <date key="time:timestamp" value="2020-01-01T12:00:00.000+01:00"/></event>
 </trace>
 <trace><string key="concept:name" value="T2"/>
  <event><string key="concept:name" value="Open"/><date key="time:timestamp" value="2020-01-02T10:00:00.000+01:00"/></event>
 </trace>
</log>"""
    p = tmp_path / "mini.xes.gz"
    p.write_bytes(gzip.compress(xes.encode()))
    log = read_log(p)
    assert log.n_events == 3 and log.n_cases == 2
    assert log.df[TIMESTAMP].iloc[0] == _utc("2020-01-01 09:00")
    assert set(log.df[RESOURCE].dropna()) == {"ann", "bob"}


def test_parquet_and_csv_round_trip(tmp_path):
    log = clean(read_log(_write(tmp_path, "a.csv", CSV)))
    pq_path = write_log(log, tmp_path / "out.parquet")
    back = read_log(pq_path)
    pd.testing.assert_frame_equal(back.df, log.df, check_dtype=False)
    assert back.case_attributes == log.case_attributes and back.name == log.name
    csv_path = write_log(log, tmp_path / "out.csv")
    back_csv = read_log(csv_path)
    pd.testing.assert_series_equal(back_csv.df[TIMESTAMP], log.df[TIMESTAMP])
    assert back_csv.df[[CASE_ID, ACTIVITY, RESOURCE]].equals(log.df[[CASE_ID, ACTIVITY, RESOURCE]])


def test_pm4py_bridge_round_trip(tmp_path):
    log = clean(read_log(_write(tmp_path, "a.csv", CSV)))
    pm = to_pm4py(log)
    assert {PM4PY_COLUMNS[CASE_ID], PM4PY_COLUMNS[ACTIVITY], PM4PY_COLUMNS[TIMESTAMP]} <= set(pm.columns)
    for attr in log.case_attributes:
        assert f"case:{attr}" in pm.columns
    back = from_pm4py(pm, "x")
    assert back.df[[CASE_ID, ACTIVITY, TIMESTAMP]].equals(log.df[[CASE_ID, ACTIVITY, TIMESTAMP]])
    assert sorted(back.case_attributes) == sorted(log.case_attributes)


# ---------------------------------------------------------------- cleaning


def _log(rows, **extra_cols) -> EventLog:
    df = pd.DataFrame(rows, columns=[CASE_ID, ACTIVITY, TIMESTAMP])
    df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP], utc=True)
    for k, v in extra_cols.items():
        df[k] = v
    return EventLog(df, name="t")


def test_activity_map_from_json_and_csv(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"Close ticket": "Closed"}))
    (tmp_path / "m.csv").write_text("old,new\nClose ticket,Closed\n")
    assert load_activity_map(tmp_path / "m.json") == load_activity_map(tmp_path / "m.csv") == {"Close ticket": "Closed"}
    log = _log([("a", "  Open ", "2020-01-01"), ("a", "Close ticket", "2020-01-02"), ("b", "Close  ticket", "2020-01-03")])
    out = clean(log, activity_map={"Close ticket": "Closed", "Never": "X"})
    assert out.df[ACTIVITY].tolist() == ["Open", "Closed", "Closed"]
    assert out.quality.count("activity_whitespace_normalised") == 2
    assert out.quality.count("activity_relabelled") == 2
    assert "never matched: ['Never']" in next(f.detail for f in out.quality.fixes if f.name == "activity_relabelled")


def test_exact_duplicates_dropped_and_counted():
    log = _log([("a", "x", "2020-01-01"), ("a", "x", "2020-01-01"), ("a", "x", "2020-01-02")])
    out = clean(log)
    assert out.n_events == 2 and out.quality.count("exact_duplicates_dropped") == 1
    kept = clean(_log([("a", "x", "2020-01-01"), ("a", "x", "2020-01-01")]), drop_duplicates=False)
    assert kept.n_events == 2


def test_zero_counts_are_reported_and_rows_add_up():
    out = clean(_log([("a", "x", "2020-01-01"), ("b", "y", "2020-01-02")]))
    names = [f.name for f in out.quality.fixes]
    for rule in ("exact_duplicates_dropped", "timestamp_missing_dropped", "activity_relabelled",
                 "missing_case_id_dropped", "rows_reordered"):
        assert rule in names
    assert out.quality.rows_in == 2 and out.quality.rows_out == 2 and out.quality.cases_out == 2


def test_missing_timestamps_drop_impute_error():
    rows = [("a", "x", "2020-01-01 10:00"), ("a", "y", None), ("a", "z", "2020-01-01 12:00"), ("b", "q", None)]
    dropped = clean(_log(rows), timestamp_policy="drop")
    assert dropped.n_events == 2 and dropped.quality.count("timestamp_missing_dropped") == 2
    imputed = clean(_log(rows), timestamp_policy="impute")
    assert imputed.quality.count("timestamp_imputed") == 1
    assert imputed.quality.count("timestamp_unimputable_dropped") == 1  # case b has no time at all
    assert imputed.df[ACTIVITY].tolist() == ["x", "y", "z"]
    assert imputed.df[TIMESTAMP].iloc[1] == _utc("2020-01-01 10:00")
    with pytest.raises(InvalidEventLog) as err:
        clean(_log(rows), timestamp_policy="error")
    assert err.value.row == 2 and err.value.column == TIMESTAMP


def test_stable_order_case_time_then_file_position():
    rows = [("b", "b1", "2020-01-01 10:00"), ("a", "a2", "2020-01-01 11:00"), ("a", "tie1", "2020-01-01 09:00"),
            ("a", "tie2", "2020-01-01 09:00"), ("b", "b0", "2020-01-01 08:00")]
    out = clean(_log(rows))
    assert out.df[ACTIVITY].tolist() == ["tie1", "tie2", "a2", "b0", "b1"]
    assert out.quality.count("rows_reordered") == 5
    again = clean(_log(rows))
    assert again.df.equals(out.df)
    twice = clean(out)
    assert twice.df.equals(out.df)
    assert [f.rows for f in twice.quality.fixes if f.name == "rows_reordered"] == [5, 0]
    assert out.quality.count("rows_reordered") == 5  # the first report is not touched by the second run


def test_case_attributes_detected():
    rows = [("a", "x", "2020-01-01"), ("a", "y", "2020-01-02"), ("b", "x", "2020-01-03")]
    out = clean(_log(rows, customer=["c1", "c1", "c2"], agent=["p", "q", "p"]))
    assert out.case_attributes == ["customer"]


def test_merge_sources_links_chat_to_ticket():
    tickets = _log([("T1", "open", "2020-01-01 10:00"), ("T1", "close", "2020-01-01 12:00"),
                    ("T2", "open", "2020-01-02 10:00")])
    chats = _log([("C9", "chat start", "2020-01-01 11:00"), ("C7", "chat start", "2020-01-05 09:00")])
    link = pd.DataFrame({"ticket_id": ["T1"], "conversation_id": ["C9"]})
    merged = merge_sources(logs={"helpdesk": tickets, "chat": chats}, link=link,
                           link_columns={"helpdesk": "ticket_id", "chat": "conversation_id"})
    t1 = merged.df[merged.df[CASE_ID] == "T1"]
    assert t1[ACTIVITY].tolist() == ["open", "chat start", "close"]
    assert t1["source"].tolist() == ["helpdesk", "chat", "helpdesk"]
    assert "chat:C7" in set(merged.df[CASE_ID])
    assert merged.quality.count("linked_chat") == 1 and merged.quality.count("unlinked_chat_kept") == 1
    dropped = merge_sources(logs={"helpdesk": tickets, "chat": chats}, link=link,
                            link_columns={"helpdesk": "ticket_id", "chat": "conversation_id"}, unlinked="drop")
    assert dropped.n_events == 4 and dropped.quality.count("unlinked_chat_dropped") == 1
    bad = pd.DataFrame({"ticket_id": ["T1", "T2"], "conversation_id": ["C9", "C9"]})
    with pytest.raises(InvalidEventLog, match="linked to several"):
        merge_sources(logs={"helpdesk": tickets, "chat": chats}, link=bad,
                      link_columns={"helpdesk": "ticket_id", "chat": "conversation_id"})


def test_ingest_pipeline_counts(tmp_path):
    text = CSV + "c1,Open,2012/10/9 14:50:17,Ann,high,first\n" + "c3,Open,not a date,Cy,low,mail x@y.org\n"
    log = ingest(_write(tmp_path, "p.csv", text), pseudonym_key="k")
    q = log.quality
    assert q.rows_in == 6 and q.rows_out == 4
    assert q.count("exact_duplicates_dropped") == 1 and q.count("timestamp_unparseable") == 1
    assert q.count("timestamp_missing_dropped") == 1
    assert log.df[RESOURCE].str.startswith("res_").all()


# ---------------------------------------------------------------- bad input


def test_missing_required_column_lists_what_exists(tmp_path):
    p = _write(tmp_path, "x.csv", "case,activity,priority\nA,x,1\n")
    with pytest.raises(InvalidEventLog) as err:
        read_log(p)
    msg = str(err.value)
    assert "timestamp" in msg and "'priority'" in msg and str(p) in msg and err.value.column == TIMESTAMP


def test_png_is_not_a_log(tmp_path):
    p = tmp_path / "img.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(InvalidEventLog, match="PNG image"):
        read_log(p)


def test_json_is_not_a_log(tmp_path):
    p = tmp_path / "data.json"
    p.write_text(json.dumps({"tickets": [1, 2, 3]}))
    with pytest.raises(InvalidEventLog, match="JSON"):
        read_log(p)


@pytest.mark.parametrize("text", ["", "case,activity,timestamp\n"])
def test_empty_log(tmp_path, text):
    with pytest.raises(InvalidEventLog, match="empty|no events"):
        read_log(_write(tmp_path, "e.csv", text))


def test_unparseable_timestamp_with_error_policy_names_row_and_column(tmp_path):
    text = "case,activity,when\nA,x,2020-01-01 10:00:00\nA,y,yesterday\n"
    with pytest.raises(InvalidEventLog) as err:
        read_log(_write(tmp_path, "u.csv", text), mapping={"when": TIMESTAMP}, timestamp_policy="error")
    assert err.value.row == 2 and err.value.column == "when" and "'yesterday'" in str(err.value)


def test_timestamp_column_of_text_is_rejected(tmp_path):
    text = "case,activity,timestamp\nA,x,hello\nA,y,world\n"
    with pytest.raises(InvalidEventLog, match="no value of the timestamp column"):
        read_log(_write(tmp_path, "w.csv", text))


def test_mapping_naming_absent_column(tmp_path):
    with pytest.raises(InvalidEventLog) as err:
        read_log(_write(tmp_path, "a.csv", CSV), mapping={"Ticket": CASE_ID})
    assert err.value.column == "Ticket" and "'Case ID'" in str(err.value)


def test_unknown_preset(tmp_path):
    with pytest.raises(InvalidEventLog, match="unknown preset"):
        read_log(_write(tmp_path, "a.csv", CSV), preset="nope")


def test_unknown_time_zone(tmp_path):
    with pytest.raises(InvalidEventLog, match="unknown source time zone 'Mars/Base'"):
        read_log(_write(tmp_path, "a.csv", CSV), source_tz="Mars/Base")


# ---------------------------------------------------------------- CLI


def _cli():
    import typer
    from typer.testing import CliRunner

    from api.commands import ingest as ingest_cmd

    app = typer.Typer()
    ingest_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keeps `ingest` a sub-command
        pass

    return app, CliRunner()


def test_cli_ingest_with_map_and_out(tmp_path):
    text = "ticket;step;when;agent\nT1;new;2020-01-01 10:00:00;x\nT1;done;2020-01-01 11:00:00;y\n"
    src = _write(tmp_path, "m.csv", text)
    app, runner = _cli()
    out = tmp_path / "clean.parquet"
    result = runner.invoke(app, ["ingest", str(src), "--map", "ticket=case_id", "--map", "step=activity",
                                 "--map", "when=timestamp", "--map", "agent=resource", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exact_duplicates_dropped" in result.output and "rows out" in result.output
    back = read_log(out)
    assert back.n_events == 2 and back.df[RESOURCE].str.startswith("res_").all()


def test_cli_reports_bad_mapping_cleanly(tmp_path):
    app, runner = _cli()
    result = runner.invoke(app, ["ingest", str(_write(tmp_path, "a.csv", CSV)), "--map", "Nope=case_id"])
    assert result.exit_code == 2
    assert "Nope" in result.output and "Traceback" not in result.output


def test_ragged_row_is_named(tmp_path):
    text = "case,activity,timestamp\nA,x,2020-01-01 10:00:00\nB,y,2020-01-01 11:00:00,extra\n"
    with pytest.raises(InvalidEventLog) as err:
        read_log(_write(tmp_path, "r.csv", text))
    assert err.value.row == 2 and "different number of fields" in str(err.value)
