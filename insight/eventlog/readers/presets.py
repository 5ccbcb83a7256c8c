"""Known public logs: how each is read (column mapping, missing-value marker, date order, known defects)."""

from __future__ import annotations

from dataclasses import dataclass

from insight.eventlog.schema import ACTIVITY, CASE_ID, CHANNEL, GROUP, LIFECYCLE, RESOURCE, TIMESTAMP


@dataclass(frozen=True)
class Preset:
    """How to read one known public log: column mapping, missing-value marker, date order and known defects."""

    mapping: dict[str, str]
    na_values: tuple[str, ...] = ()
    dayfirst: bool | None = None
    source_tz: str = "UTC"
    # cases the source itself is known to hold incomplete (e.g. a truncated copy); dropped and counted
    drop_cases: tuple[str, ...] = ()
    drop_cases_reason: str = ""
    # canonical activity built by joining these (already mapped) columns with "-"
    activity_from: tuple[str, ...] = ()
    # further columns holding timestamps, parsed with the same rules as `timestamp`
    extra_timestamps: tuple[str, ...] = ()
    # customer / agent identifier columns pseudonymized by `ingest` besides `resource`
    identifier_columns: tuple[str, ...] = ()
    description: str = ""


PRESETS: dict[str, Preset] = {
    "helpdesk_csv": Preset(
        mapping={
            "Case ID": CASE_ID,
            "Activity": ACTIVITY,
            "Complete Timestamp": TIMESTAMP,
            "Resource": RESOURCE,
        },
        identifier_columns=("customer",),
        description="Helpdesk finale.csv with case attributes (naive local times, read as UTC).",
    ),
    "helpdesk_xes": Preset(mapping={}, description="Helpdesk.xes.gz (pm4py names)."),
    "bpic2013_vinst": Preset(
        mapping={
            "SR Number": CASE_ID,
            "Activity": ACTIVITY,
            "Change Date+Time": TIMESTAMP,
            "Owner First Name": RESOURCE,
            "Involved ST": GROUP,
            "Sub Status": LIFECYCLE,
        },
        description="BPIC 2013 VINST incidents CSV (IBM copy); activity = Status-Sub Status, group = Involved ST.",
    ),
    "bpic2013_xes": Preset(
        mapping={},
        activity_from=(ACTIVITY, LIFECYCLE),
        description="BPIC 2013 incidents XES; activity = Status-Sub Status (concept:name-lifecycle:transition).",
    ),
    "bpic2012_xes": Preset(mapping={}, description="BPIC 2012 loan applications XES."),
    "servicenow": Preset(
        mapping={
            "number": CASE_ID,
            "incident_state": ACTIVITY,
            "sys_updated_at": TIMESTAMP,
            "assignment_group": GROUP,
            "assigned_to": RESOURCE,
            "contact_type": CHANNEL,
        },
        na_values=("?",),
        dayfirst=True,
        drop_cases=("INC0029233",),
        drop_cases_reason="the stored copy is truncated inside this last incident (SOURCES.md)",
        extra_timestamps=("opened_at", "sys_created_at", "resolved_at", "closed_at"),
        identifier_columns=("caller_id", "opened_by", "sys_created_by", "sys_updated_by", "resolved_by"),
        description="UCI 498 ServiceNow incident log (IBM subset): '?' is missing, day-first dates.",
    ),
    # Ticket exports are one row per ticket (its latest status), not event logs: mined as a snapshot.
    "zendesk_export": Preset(
        mapping={"Id": CASE_ID, "Status": ACTIVITY, "Updated at": TIMESTAMP, "Group": GROUP, "Assignee": RESOURCE,
                 "Via": CHANNEL},
        extra_timestamps=("Created at", "Solved at", "Assigned at", "Initially assigned at"),
        identifier_columns=("Requester", "Requester id", "Requester email", "Submitter"),
        description="Zendesk ticket CSV export (one row per ticket: latest status, group, assignee, via).",
    ),
    "freshdesk_export": Preset(
        mapping={"Ticket ID": CASE_ID, "Status": ACTIVITY, "Last update time": TIMESTAMP, "Group": GROUP,
                 "Agent": RESOURCE, "Source": CHANNEL},
        extra_timestamps=("Created time", "Resolved time", "Closed time"),
        identifier_columns=("Full name", "Contact ID", "Email"),
        description="Freshdesk ticket CSV export (one row per ticket: latest status, group, agent, source).",
    ),
    "tax2017": Preset(
        mapping={"CaseID": CASE_ID, "ActivityID": ACTIVITY, "CompleteTimestamp": TIMESTAMP},
        description="Tax et al. 2017 preprocessed CSVs (integer activity ids).",
    ),
}
