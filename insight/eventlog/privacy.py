"""PII redaction in free text and keyed pseudonymization of customer / agent identifiers."""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from insight.errors import InvalidInput
from insight.eventlog.schema import (
    ACTIVITY,
    CASE_ID,
    CHANNEL,
    GROUP,
    LIFECYCLE,
    RESOURCE,
    TIMESTAMP,
    DataQualityReport,
    EventLog,
)

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
IBAN = "[IBAN]"
IP = "[IP]"

_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)")
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE_RE = re.compile(
    r"(?<![\w+:/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}(?![\w:/]|\.\d)"
)
# International numbers ("+31 6 12345678", "0044 20 7946 0958"): groups may be a single digit; validity is
# decided by the phonenumbers library's metadata for the country code, not by the pattern.
_INTL_PHONE_RE = re.compile(r"(?<![\w+:/.-])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,7}(?![\w:/]|\.\d)")
_DATE_LIKE = re.compile(r"^\d{4}[-.]\d{1,2}[-.]\d{1,2}(?!\d)|^\d{1,2}[-.]\d{1,2}[-.]\d{2,4}(?!\d)")
# quick pre-filter: a value without any digit or "@" cannot hold any of the patterns
_MAYBE_PII = re.compile(r"[\d@]")

KINDS = ("email", "iban", "card", "ip", "phone")
# canonical columns never scanned as free text (ids and categories with their own handling)
_NOT_TEXT = (CASE_ID, ACTIVITY, TIMESTAMP, RESOURCE, GROUP, CHANNEL, LIFECYCLE)


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """True when the IBAN passes the ISO 13616 mod-97 check."""
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(ch, 36)) for ch in moved)
    return int(num) % 97 == 1


def _sub(pattern: re.Pattern[str], text: str, check: Callable[[str], bool], placeholder: str,
         counts: Counter[str], kind: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if check(m.group(0)):
            counts[kind] += 1
            return placeholder
        return m.group(0)

    return pattern.sub(repl, text)


def _card_check(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ipv6_check(s: str) -> bool:
    if s.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", s):
        return False
    try:
        ipaddress.IPv6Address(s)
        return True
    except ValueError:
        return False


def _intl_phone_check(s: str) -> bool:
    import phonenumbers

    try:
        number = phonenumbers.parse("+" + s[2:] if s.startswith("00") else s, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def _phone_check(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    if not 8 <= len(digits) <= 15 or _DATE_LIKE.match(s):
        return False
    # a bare run of digits is only a phone number with a leading 0 (national) or as +international
    return not (s.isdigit() and not s.startswith("0"))


def _redact_one(text: str, counts: Counter[str]) -> str:
    if not _MAYBE_PII.search(text):
        return text
    text = _sub(_EMAIL_RE, text, lambda _: True, EMAIL, counts, "email")
    text = _sub(_IBAN_RE, text, iban_ok, IBAN, counts, "iban")
    text = _sub(_CARD_RE, text, _card_check, CARD, counts, "card")
    text = _sub(_IPV4_RE, text, lambda _: True, IP, counts, "ip")
    text = _sub(_IPV6_RE, text, _ipv6_check, IP, counts, "ip")
    text = _sub(_INTL_PHONE_RE, text, _intl_phone_check, PHONE, counts, "phone")
    text = _sub(_PHONE_RE, text, _phone_check, PHONE, counts, "phone")
    return text


def redact_text(text: str) -> str:
    """Replace emails, phones, Luhn-valid card numbers, mod-97-valid IBANs and IP addresses with placeholders."""
    return _redact_one(text, Counter())


@dataclass
class RedactionCounts:
    """How many values were changed and how many items of each kind were replaced."""

    values_changed: int = 0
    items: Counter[str] = field(default_factory=Counter)


def redact_series(values: pd.Series) -> tuple[pd.Series, RedactionCounts]:
    """Redacted copy of a text column (each distinct value is scanned once) and what was replaced."""
    counts = RedactionCounts()
    nonnull = values.dropna()
    if nonnull.empty:
        return values, counts
    codes, uniques = pd.factorize(values)
    freq = np.bincount(codes[codes >= 0], minlength=len(uniques))
    out_uniques = []
    for u, n in zip(uniques, freq, strict=True):
        local: Counter[str] = Counter()
        r = _redact_one(str(u), local)
        for k, v in local.items():
            counts.items[k] += v * int(n)
        if r != str(u):
            counts.values_changed += int(n)
        out_uniques.append(r)
    if counts.values_changed == 0:
        return values, counts
    arr = np.asarray(out_uniques, dtype=object)
    result = pd.Series(np.where(codes >= 0, arr[np.maximum(codes, 0)], None), index=values.index, name=values.name)
    return result.astype("str").where(codes >= 0), counts


def text_columns(df: pd.DataFrame, *, exclude: Iterable[str] = ()) -> list[str]:
    """String columns scanned for PII: every text column except ids, categories of the schema and `exclude`.

    Scanning is per distinct value, so low-cardinality category columns cost almost nothing; scanning them
    too catches PII that leaks into a "category" or "location" field.
    """
    skip = set(_NOT_TEXT) | set(exclude)
    return [
        c for c in df.columns
        if c not in skip and (pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object)
    ]


def _id_text(value: object) -> str:
    # an id read as float because its column has gaps (7.0) must hash like the same id read as int (7)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _token(key: bytes, value: str, length: int) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def pseudonymize(values: pd.Series, *, key: str | bytes, prefix: str = "id", length: int = 10) -> pd.Series:
    """Stable keyed tokens (`<prefix>_<hmac-sha256 hex>`) for identifiers; missing stays missing.

    The token depends on the key and the raw value only, so the same person gets the same hex part in every
    file and column (the prefix tells columns apart); without the key a token cannot be reversed.
    """
    if not key:
        raise InvalidInput("pseudonymization needs a non-empty key (settings.pseudonym_key)", field="key")
    k = key.encode("utf-8") if isinstance(key, str) else key
    codes, uniques = pd.factorize(values)
    tokens = [f"{prefix}_{_token(k, _id_text(u), length)}" for u in uniques]
    if len(set(tokens)) != len(uniques):
        raise InvalidInput(f"pseudonym collision in column {values.name!r}; use a longer token", field="length")
    # one HMAC per distinct value, broadcast with an Arrow take (no per-row Python objects)
    taken = pa.array(tokens, type=pa.large_string()).take(pa.array(codes, mask=codes < 0))
    return pd.Series(pd.arrays.ArrowStringArray(taken), index=values.index, name=values.name).astype("str")


def pseudonym_prefix(column: str) -> str:
    """Token prefix for a column's pseudonyms (`res` for agents), the same in every log and in the service."""
    if column == RESOURCE:
        return "res"
    return re.sub(r"[^a-z0-9]", "", column.lower())[:3] or "id"


def apply_privacy(
    log: EventLog,
    *,
    key: str | bytes | None,
    pseudonymize_columns: Sequence[str] = (RESOURCE,),
    redact_columns: Sequence[str] | None = None,
    report: DataQualityReport | None = None,
) -> EventLog:
    """A copy of the log with identifier columns pseudonymized and free-text columns redacted (counted)."""
    rep = report or (copy.deepcopy(log.quality) if log.quality else None) or DataQualityReport(
        source=log.name, rows_in=len(log.df))
    df = log.df.copy()
    present = [c for c in pseudonymize_columns if c in df.columns]
    absent = [c for c in pseudonymize_columns if c not in df.columns and c != RESOURCE]
    if absent:
        raise InvalidInput(f"cannot pseudonymize column(s) {absent}: not in the log {list(df.columns)}",
                           field="pseudonymize_columns")
    if key:
        for col in present:
            df[col] = pseudonymize(df[col], key=key, prefix=pseudonym_prefix(col))
            rep.add("pseudonymized", int(df[col].notna().sum()), f"column {col!r} (HMAC-SHA256)")
        if not present:
            rep.add("pseudonymized", 0, "no identifier column present")
    else:
        rep.add("pseudonymized", 0, "no key given: identifiers kept raw")
        if present:
            rep.warnings.append(f"identifier column(s) {present} NOT pseudonymized (no key given)")
    cols = list(redact_columns) if redact_columns is not None else text_columns(df, exclude=present)
    bad = [c for c in cols if c not in df.columns]
    if bad:
        raise InvalidInput(f"cannot redact column(s) {bad}: not in the log {list(df.columns)}", field="redact_columns")
    total: Counter[str] = Counter()
    changed = 0
    for col in cols:
        new, counts = redact_series(df[col])
        if counts.values_changed:
            df[col] = new
        changed += counts.values_changed
        total.update(counts.items)
    for kind in KINDS:
        rep.add(f"redacted_{kind}", total[kind], f"{len(cols)} text column(s) scanned")
    rep.add("redacted_values", changed, ", ".join(cols[:10]) + (" …" if len(cols) > 10 else ""))
    return EventLog(df, name=log.name, case_attributes=list(log.case_attributes), quality=rep)
