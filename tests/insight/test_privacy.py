"""PII redaction rules (with checksums) and keyed pseudonymization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidInput
from insight.eventlog import RESOURCE, TIMESTAMP, EventLog, pseudonymize, redact_series, redact_text
from insight.eventlog.privacy import apply_privacy, iban_ok, is_person_field, luhn_ok, person_columns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+x@mail.example.co.uk please", "write to [EMAIL] please"),
        ("call +44 20 7946 0958 today", "call [PHONE] today"),
        ("call (030) 1234-5678", "call [PHONE]"),
        ("mobile 0612345678", "mobile [PHONE]"),
        ("bel me op +31 6 12345678 morgen", "bel me op [PHONE] morgen"),
        ("or 0031 6 1234 5678.", "or [PHONE]."),
        ("mail a@b.nl (+31 6 12345678) today", "mail [EMAIL] ([PHONE]) today"),
        # digits glued to letters (a tracking number) or after "+" (a phone) are no card, even when Luhn-valid
        ("tracking 1Z4831648929300864, call +49 152 44797648", "tracking 1Z4831648929300864, call [PHONE]"),
        ("US office +1 415-555-2671", "US office [PHONE]"),
        ("release +3 1 2 and +12 5 EUR stay", "release +3 1 2 and +12 5 EUR stay"),
        ("card 4111 1111 1111 1111 exp 12/29", "card [CARD] exp 12/29"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("amex 378282246310005", "amex [CARD]"),
        ("iban GB82 WEST 1234 5698 7654 32.", "iban [IBAN]."),
        ("iban DE89370400440532013000", "iban [IBAN]"),
        ("from 192.168.10.254 to 10.0.0.1", "from [IP] to [IP]"),
        ("my router is 192.168.10.254.", "my router is [IP]."),
        ("version 1.2.3.4.5 stays", "version 1.2.3.4.5 stays"),
        ("v6 2001:db8:85a3::8a2e:370:7334 and ::1 x", "v6 [IP] and [IP] x"),
    ],
)
def test_each_kind_is_redacted(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 is not a card",  # 16 digits failing Luhn
        "GB82WEST12345698765433 fails mod-97",
        "opened 2016-05-13 14:50:17 ticket 12345",
        "at 29/2/2016 01:16 in room 101",
        "version 3.2.1 build 20240101",
        "Value 12 Group 70 Caller 2403",
        "999.1.1.1 is not an address",
        "no digits at all",
    ],
)
def test_non_pii_stays(text):
    assert redact_text(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_redact_series_counts_per_row_and_keeps_missing():
    s = pd.Series(["mail a@b.io", None, "mail a@b.io", "fine", "x 4111111111111111 y c@d.org"])
    out, counts = redact_series(s)
    assert out.tolist()[0] == "mail [EMAIL]" and pd.isna(out.iloc[1]) and out.iloc[3] == "fine"
    assert out.iloc[4] == "x [CARD] y [EMAIL]"
    assert counts.values_changed == 3 and counts.items["email"] == 3 and counts.items["card"] == 1


def test_pseudonymize_stable_keyed_and_raw_free():
    a = pd.Series(["alice", "bob", None, "alice"], name=RESOURCE)
    t1 = pseudonymize(a, key="k1", prefix="res")
    assert t1.iloc[0] == t1.iloc[3] != t1.iloc[1] and pd.isna(t1.iloc[2])
    assert t1.iloc[0].startswith("res_") and len(t1.iloc[0]) == 14
    assert not t1.dropna().str.contains("alice|bob").any()
    # same person, another file: same token; another key: another token
    other_file = pseudonymize(pd.Series(["carol", "alice"]), key="k1", prefix="res")
    assert other_file.iloc[1] == t1.iloc[0]
    assert pseudonymize(a, key="k2", prefix="res").iloc[0] != t1.iloc[0]
    with pytest.raises(InvalidInput):
        pseudonymize(a, key="")
    # numeric ids: 7 read as float (column with gaps) and as int get the same token
    assert pseudonymize(pd.Series([7.0, None]), key="k1").iloc[0] == pseudonymize(pd.Series([7]), key="k1").iloc[0]


def _log() -> EventLog:
    df = pd.DataFrame({
        "case_id": ["c1", "c1", "c2"],
        "activity": ["open", "reply", "open"],
        TIMESTAMP: pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"], utc=True),
        RESOURCE: ["ann@corp.com", "bob", "ann@corp.com"],
        "customer": ["cust-1", "cust-1", "cust-2"],
        "body": ["hi, reach me at 0612345678", "ok", "ip 10.1.2.3"],
    })
    return EventLog(df, name="p")


def test_apply_privacy_on_log():
    out = apply_privacy(_log(), key="secret", pseudonymize_columns=(RESOURCE, "customer"))
    df = out.df
    assert df[RESOURCE].str.startswith("res_").all() and df["customer"].str.startswith("cus_").all()
    assert df["body"].tolist() == ["hi, reach me at [PHONE]", "ok", "ip [IP]"]
    q = out.quality
    assert q.count("redacted_phone") == 1 and q.count("redacted_ip") == 1 and q.count("redacted_email") == 0
    assert q.count("pseudonymized") == 6
    raw = apply_privacy(_log(), key=None)
    assert raw.df[RESOURCE].iloc[1] == "bob"
    assert any("NOT pseudonymized" in w for w in raw.quality.warnings)


def test_each_distinct_value_is_scanned_once(monkeypatch):
    import insight.eventlog.privacy as privacy

    calls: list[str] = []
    real = privacy._redact_many
    monkeypatch.setattr(privacy, "_redact_many", lambda texts: calls.extend(texts) or real(texts))
    rng = np.random.default_rng(0)
    texts = np.array([f"agent note {i} mail u{i}@x.org" for i in range(2000)], dtype=object)
    s = pd.Series(texts[rng.integers(0, 2000, 500_000)])
    out, counts = redact_series(s)
    tokens = pseudonymize(s, key="k")
    assert len(calls) == s.nunique() <= 2000
    assert counts.items["email"] == 500_000 and counts.values_changed == 500_000
    assert tokens.nunique() == s.nunique()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi Anna, my card was charged twice.\n\nRegards,\nJan de Vries",
         "Hi [NAME], my card was charged twice.\n\nRegards,\n[NAME]"),
        ("Dear Mr. Smith, I cannot log in.", "Dear Mr. [NAME], I cannot log in."),
        ("Hello, my name is Wei Zhang and the app crashes", "Hello, my name is [NAME] and the app crashes"),
        ("The transfer to Peter Jansen has not arrived yet.", "The transfer to [NAME] has not arrived yet."),
        ("Thanks, Sophie", "Thanks, [NAME]"),
        ("I sent the money to Oluwaseun Yılmaz on Friday.", "I sent the money to [NAME] on Friday."),
        ("the card is in the name of my wife, Ingrid Nowak.", "the card is in the name of my wife, [NAME]."),
        ("help please\nthanks,\nkofi de vries", "help please\nthanks,\n[NAME]"),
        ("Best regards, J. Smith", "Best regards, [NAME]"),
        ("Beste mevrouw Jansen, bel me op +31 6 12345678.\nMet vriendelijke groet,\nKees van der Berg",
         "Beste mevrouw [NAME], bel me op [PHONE].\nMet vriendelijke groet,\n[NAME]"),
    ],
)
def test_person_names_are_redacted(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hi team, the VPN is down since Monday. Thanks",
        "Dear Sir or Madam, please refund my order.",
        "Regards, Support Team",
        "Thanks for your help with the Apple Pay top up",
        "Hello there, my top up failed in the UK.",
        "Hi, I paid with Visa. Thanks, much appreciated",
        "Cheers, I sent it to Google Pay and Mastercard.",
        "Thanks\nI still have no card",
    ],
)
def test_greetings_and_products_are_not_names(text):
    assert redact_text(text) == text


def test_pseudonymizing_twice_gives_the_same_token():
    s = pd.Series(["anna", None, "bob"])
    once = pseudonymize(s, key="k", prefix="res")
    assert once.iloc[1] is None or pd.isna(once.iloc[1])
    assert pseudonymize(once, key="k", prefix="res").tolist() == once.tolist()
    # a token of another column's prefix is an identifier like any other
    assert pseudonymize(once, key="k", prefix="cus").iloc[0] != once.iloc[0]


def test_columns_named_for_people_are_found_and_pseudonymized_per_column():
    assert is_person_field("Owner First Name") and is_person_field("requester_email") and is_person_field("caller_id")
    assert not any(is_person_field(c) for c in ("Owner Country", "assignment_group", "customer_segment",
                                                "user_satisfaction", "Product"))
    df = pd.DataFrame({
        "case_id": ["c1", "c2"], "activity": ["open", "open"],
        TIMESTAMP: pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
        "Owner First Name": ["Anna", "Jan"], "Owner Country": ["NL", "BE"],
        "note": ["Hi Anna, mail me at a@b.nl", "ok"],
    })
    log = EventLog(df, name="p")
    cols = person_columns(log.df)
    assert cols == ["Owner First Name"]
    out = apply_privacy(log, key="secret", pseudonymize_columns=(RESOURCE, *cols))
    assert out.df["Owner First Name"].str.startswith("own_").all()
    assert out.df["Owner Country"].tolist() == ["NL", "BE"]
    assert out.df["note"].tolist() == ["Hi [NAME], mail me at [EMAIL]", "ok"]
    per_column = [f for f in out.quality.fixes if f.name == "redacted_column"]
    assert [(f.rows, f.detail) for f in per_column] == [(1, "column 'note': email 1, name 1")]
    assert out.quality.count("redacted_name") == 1


def test_ingest_of_a_disco_export_leaves_no_agent_name(tmp_path):
    """A Disco-style CSV: `Resource` holds agent first names and an extra owner column names people too."""
    from insight.eventlog import ingest

    path = tmp_path / "disco.csv"
    path.write_text(
        "Case ID,Activity,Complete Timestamp,Resource,Owner First Name,Owner Country,Note\n"
        '1,Open,2013/01/15 04:36:33,Siebe,Anneke,Netherlands,"Hi Siebe, call +31 6 12345678"\n'
        "1,Close,2013/01/15 05:06:12,Anneke,Anneke,Netherlands,done\n"
    )
    log = ingest(path, pseudonym_key="install-key-0123456789abcdef")
    df = log.df
    assert df[RESOURCE].str.startswith("res_").all() and df["Owner First Name"].str.startswith("own_").all()
    assert df["Owner Country"].tolist() == ["Netherlands", "Netherlands"]
    assert df["Note"].tolist() == ["Hi [NAME], call [PHONE]", "done"]
    # one agent, one token: "Anneke" as resource and as owner share the hex part
    assert df[RESOURCE].iloc[1][4:] == df["Owner First Name"].iloc[1][4:]
    text = df.astype(str).to_csv()
    assert "Siebe" not in text and "Anneke" not in text
    q = log.quality
    pseudo = {f.detail for f in q.fixes if f.name == "pseudonymized"}
    assert pseudo == {"column 'resource' (HMAC-SHA256)", "column 'Owner First Name' (HMAC-SHA256)"}
    assert [(f.rows, f.detail) for f in q.fixes if f.name == "redacted_column"] == [
        (1, "column 'Note': phone 1, name 1")]


def test_a_column_is_redacted_like_each_of_its_values():
    """Columns are read by the model in batches; the result is the same as one text at a time."""
    texts = ["Hi Anna, my card 4111 1111 1111 1111 was declined.\nRegards,\nJan de Vries",
             "The transfer to Peter Jansen has not arrived yet.", "ok", "Thanks, Sophie",
             "Dear Mr. Smith, call me on +31 6 12345678", None, "The transfer to Peter Jansen has not arrived yet."]
    out, counts = redact_series(pd.Series(texts, dtype=object))
    assert out.tolist()[:5] == [redact_text(t) for t in texts[:5]]
    assert pd.isna(out.iloc[5]) and out.iloc[6] == out.iloc[1]
    assert counts.items["name"] == 6 and counts.values_changed == 5
