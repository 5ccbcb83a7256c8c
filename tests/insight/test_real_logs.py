"""The public logs in ../shared/data load with the counts SOURCES.md gives (each parsed once per session)."""

from __future__ import annotations

import pandas as pd
import pytest

from insight.eventlog import CASE_ID, GROUP, RESOURCE, TIMESTAMP, EventLog, ingest, read_log

pytestmark = pytest.mark.realdata

LOGS = "process_logs"


@pytest.fixture(scope="session")
def helpdesk_xes(shared_data) -> EventLog:
    return read_log(shared_data / LOGS / "helpdesk" / "Helpdesk.xes.gz")


@pytest.fixture(scope="session")
def helpdesk_csv(shared_data) -> EventLog:
    return read_log(shared_data / LOGS / "helpdesk" / "helpdesk_finale_attributes.csv.gz", preset="helpdesk_csv")


@pytest.fixture(scope="session")
def servicenow(shared_data) -> EventLog:
    return ingest(shared_data / LOGS / "servicenow_uci498" / "incident_event_log_ibm_subset.csv.gz",
                  preset="servicenow", pseudonym_key="test-key")


def _counts(log: EventLog) -> tuple[int, int, int]:
    return log.n_events, log.n_cases, len(log.activities)


def test_helpdesk_xes_counts(helpdesk_xes):
    assert _counts(helpdesk_xes) == (21_348, 4_580, 14)
    assert helpdesk_xes.df[RESOURCE].nunique() == 22
    counts = helpdesk_xes.df["activity"].value_counts()
    assert counts["Take in charge ticket"] == 5_060 and counts["Closed"] == 4_574 and counts["DUPLICATE"] == 1
    assert helpdesk_xes.df[TIMESTAMP].dt.tz is not None
    # the XES repeats concept:name / org:resource as "Activity" / "Resource": dropped as redundant
    assert "Resource" not in helpdesk_xes.df.columns


def test_helpdesk_csv_counts_and_duplicate_header(helpdesk_csv):
    assert _counts(helpdesk_csv) == (21_348, 4_580, 14)
    assert {"Variant", "Variant_2", "workgroup", "customer"} <= set(helpdesk_csv.df.columns)
    assert any("'Variant'" in w for w in helpdesk_csv.quality.warnings)
    assert helpdesk_csv.df["workgroup"].value_counts()["Value 1"] == 18_092


def test_helpdesk_csv_and_xes_agree_after_cleaning(helpdesk_xes, helpdesk_csv):
    from insight.eventlog import clean

    a, b = clean(helpdesk_xes, drop_duplicates=False), clean(helpdesk_csv, drop_duplicates=False)
    assert _counts(a) == _counts(b) == (21_348, 4_580, 14)
    assert a.df["activity"].value_counts().to_dict() == b.df["activity"].value_counts().to_dict()
    # the file holds 127 exact duplicate events; default cleaning drops and counts them
    deduped = clean(helpdesk_xes)
    assert deduped.quality.count("exact_duplicates_dropped") == 127 and deduped.n_events == 21_348 - 127
    assert deduped.n_cases == 4_580


def test_helpdesk_preset_pseudonymizes_customer(shared_data):
    log = ingest(shared_data / LOGS / "helpdesk" / "helpdesk_finale_attributes.csv.gz", preset="helpdesk_csv",
                 pseudonym_key="k")
    assert log.df["customer"].str.startswith("cus_").all() and log.df[RESOURCE].str.startswith("res_").all()
    assert log.df["customer"].nunique() == 397


def test_bpic2013_vinst_csv(shared_data):
    log = read_log(shared_data / LOGS / "bpic2013" / "VINST_incidents_ibm_with_support_level.csv.gz",
                   preset="bpic2013_vinst")
    assert _counts(log) == (65_533, 7_554, 13)
    assert log.df[GROUP].nunique() == 649  # Involved ST
    assert log.df["ST Level"].value_counts()["L1"] == 46_042
    assert log.df["Status"].value_counts().to_dict() == {
        "Accepted": 40_117, "Completed": 13_867, "Queued": 11_544, "Unmatched": 5}
    # the offsets in the file (+01:00 / +02:00) are converted, not dropped
    assert log.df[TIMESTAMP].iloc[0] == pd.Timestamp("2010-03-31 14:59:42", tz="UTC")


def test_bpic2013_xes_matches_vinst(shared_data):
    log = read_log(shared_data / LOGS / "bpic2013" / "BPI_Challenge_2013_incidents.xes.gz", preset="bpic2013_xes")
    assert _counts(log) == (65_533, 7_554, 13)
    assert log.df[GROUP].nunique() == 649


def test_servicenow(servicenow):
    q = servicenow.quality
    assert q.rows_in == 119_998
    assert q.count("known_incomplete_case_dropped") == 1
    assert "INC0029233" not in set(servicenow.df[CASE_ID])
    assert servicenow.n_cases == 20_769 - 1 and servicenow.n_events == 119_997
    assert len(servicenow.activities) == 9
    # '?' is missing, not a group called "?"; 73 values incl. '?' in SOURCES.md
    assert servicenow.df[GROUP].nunique() == 72 and "?" not in set(servicenow.df[GROUP].dropna())
    # day-first: 29/2/2016 only exists day-first
    assert servicenow.df["opened_at"].min() >= pd.Timestamp("2016-02-29", tz="UTC")
    assert servicenow.df["caller_id"].dropna().str.startswith("cal_").all()
    assert "reassignment_count" in servicenow.df.columns
    assert servicenow.df["reassignment_count"].dtype.kind == "i"


@pytest.mark.slow
def test_bpic2012_xes(shared_data):
    log = read_log(shared_data / LOGS / "bpic2012" / "BPI_Challenge_2012.xes.gz")
    assert _counts(log) == (262_200, 13_087, 24)
    assert {"REG_DATE", "AMOUNT_REQ"} <= set(log.case_attributes)
