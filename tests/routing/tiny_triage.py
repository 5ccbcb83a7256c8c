"""A tiny but real triage for tests: TF-IDF + logistic regression trained on planted tickets (not a mock).

It follows the `routing.triage` contract (`decide(*, bundle, ticket, thresholds) -> TriageResult`), so the
service and the HTTP stack can be tested before (and independently of) the production models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from insight.models.intent import IntentPrediction
from routing.models import DecisionThresholds, Risks, TeamScore, TicketIn, TriageResult
from routing.triage import decision_for

TEAM_OF = {"billing": "Finance", "password": "IT", "shipping": "Logistics"}
PHRASES = {
    "billing": ["invoice is wrong", "charged twice on my card", "refund my payment", "billing error on invoice",
                "double charge refund", "payment charged incorrectly", "invoice amount too high",
                "need a refund for the charge"],
    "password": ["cannot login to my account", "reset my password", "password reset link broken",
                 "locked out of login", "forgot password cannot sign in", "login fails password",
                 "account locked after password attempts", "two factor login problem"],
    "shipping": ["package never arrived", "where is my delivery", "tracking number not working",
                 "parcel delivery late", "shipment lost in transit", "delivery address wrong package",
                 "courier did not deliver parcel", "track my shipment"],
}


def planted_tickets() -> tuple[list[str], list[str]]:
    """Texts and intents of the planted training set."""
    texts: list[str] = []
    labels: list[str] = []
    for intent, phrases in PHRASES.items():
        for p in phrases:
            texts += [p, f"hello, {p}, please help", f"{p} since yesterday"]
            labels += [intent] * 3
    return texts, labels


@dataclass
class TinyBundle:
    """Trained intent model plus the versions it reports (the shape ModelBundle is expected to have)."""

    intent_model: object
    versions: dict[str, str] = field(default_factory=dict)
    oos_threshold: float = 0.6


def train_tiny_bundle(version: str = "tiny-1") -> TinyBundle:
    """Fit the tiny intent model on the planted tickets."""
    texts, labels = planted_tickets()
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=20.0, max_iter=2000, random_state=0),
    )
    model.fit(texts, labels)
    return TinyBundle(intent_model=model, versions={"intent": version, "router": version})


def tiny_decide(*, bundle: TinyBundle, ticket: TicketIn, thresholds: DecisionThresholds) -> TriageResult:
    """Triage one ticket with the tiny model; the decision is the production rule (`routing.triage`)."""
    model = bundle.intent_model
    proba = np.asarray(model.predict_proba([ticket.text])[0])  # type: ignore[attr-defined]
    classes = list(model.classes_)  # type: ignore[attr-defined]
    order = np.argsort(-proba)
    intent = str(classes[order[0]])
    conf = float(proba[order[0]])
    oos = conf < bundle.oos_threshold
    team = TEAM_OF[intent]
    top = [TeamScore(team=TEAM_OF[str(classes[i])], probability=float(proba[i])) for i in order]
    risks = Risks(misroute=1.0 - conf, sla_breach=None, expected_hours_to_resolve=None)
    decision, reasons = decision_for(intent_pred=IntentPrediction(label=intent, confidence=conf, out_of_scope=oos),
                                     teams=top, risks=risks, thresholds=thresholds)
    return TriageResult(
        intent=None if oos else intent, intent_confidence=conf, out_of_scope=oos, team=team, team_confidence=conf,
        top_teams=top, risks=risks, decision=decision, reasons=[*reasons, f"intent {intent} ({conf:.2f})"],
        model_versions=dict(bundle.versions),
    )
