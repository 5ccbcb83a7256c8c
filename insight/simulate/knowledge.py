"""The simulated organisation's knowledge base: one how-to article per intent, except the planted knowledge gap.

Articles are plain dicts (title, body in Markdown, tags, intents, activities) so `insight` stays free of the
knowledge hub; `deskpilot demo` imports them into the hub. The knowledge-gap intent deliberately gets no article of
its own, only a loosely related one, so the gap report has something real to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from insight.simulate.config import AGENT_STEPS, INTENTS, SimConfig


@dataclass(frozen=True)
class ArticleSpec:
    """One knowledge article of the simulated help centre."""

    title: str
    body: str
    intents: tuple[str, ...]
    tags: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the shape the knowledge hub imports."""
        return {
            "title": self.title,
            "body": self.body,
            "intents": list(self.intents),
            "tags": list(self.tags),
            "activities": list(self.activities),
        }


# intent -> (title, customer-facing answer, agent steps, tags)
_CONTENT: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "billing dispute": (
        "Resolving a disputed charge on an invoice",
        "We have reviewed the charge you disputed. If the amount does not match your plan, we reverse the "
        "difference within 5 business days and you will see a credit note on your next invoice.",
        ("Open the customer's billing history and find the disputed line.",
         "Compare the charged amount with the plan price on the charge date.",
         "If the charge is wrong, issue a credit note for the difference and tell the customer the 5-day timeline.",
         "If the charge is right, explain which usage or add-on caused it."),
        ("billing", "invoice", "charge"),
    ),
    "refund request": (
        "Processing a refund request",
        "Your refund has been requested. Refunds above 100 EUR need a supervisor's approval, which usually takes "
        "up to two business days; once approved the money returns to your original payment method within 5 days.",
        ("Check the order or subscription is within the 30-day refund window.",
         "For amounts above 100 EUR, request approval from the Approvals team before promising anything.",
         "Issue the refund to the original payment method and share the expected date."),
        ("billing", "refund", "approval"),
    ),
    "password reset": (
        "Helping a customer reset their password",
        "You can reset your password from the sign-in page with 'Forgot password'. The reset link is valid for "
        "30 minutes; if it has expired, request a new one and check your spam folder.",
        ("Confirm the customer's identity with two account details.",
         "Send a fresh reset link from the admin console; links expire after 30 minutes.",
         "If the link never arrives, check the email address on file and the spam folder."),
        ("account", "password", "self-service"),
    ),
    "login issue": (
        "Troubleshooting sign-in problems",
        "Sign-in problems are usually caused by an expired session, a locked account after five failed attempts, "
        "or two-factor codes out of sync. Clear your browser cookies, wait 15 minutes for the lock to lift, and "
        "check your phone's clock is set automatically.",
        ("Check whether the account is locked after five failed attempts and unlock it.",
         "Check the two-factor device and re-sync it if codes are rejected.",
         "If there are signs of unauthorised access, hand over to Security L3."),
        ("account", "login", "2fa"),
    ),
    "delivery delay": (
        "Answering questions about a late delivery",
        "Your parcel is with the carrier. Deliveries can take up to 7 business days; if it has not arrived after "
        "that, we open a trace with the carrier and send a replacement or refund.",
        ("Look up the tracking number and the carrier's last scan.",
         "Within 7 business days: give the customer the tracking link and the expected date.",
         "After 7 business days: open a carrier trace and offer a replacement."),
        ("delivery", "shipping", "tracking"),
    ),
    "damaged item": (
        "Handling an item that arrived damaged",
        "We are sorry your item arrived damaged. Please send a photo of the item and the packaging; we will ship "
        "a replacement as soon as we receive it, and you do not need to return the damaged item.",
        ("Ask for photos of the item and the packaging.",
         "Create a replacement order; no return is needed for items under 200 EUR.",
         "Log a damage claim with the carrier."),
        ("delivery", "damage", "replacement"),
    ),
    "plan upgrade": (
        "Upgrading a customer's plan",
        "You can upgrade your plan at any time from Settings > Plan. The new features are active immediately and "
        "you only pay the difference for the rest of the billing period.",
        ("Confirm the target plan and the billing period.",
         "Apply the upgrade from the admin console; proration is automatic.",
         "Tell the customer the prorated amount on the next invoice."),
        ("plan", "upgrade", "billing"),
    ),
    "cancel subscription": (
        "Cancelling a subscription",
        "Your subscription will end at the close of the current billing period and you keep access until then. "
        "Cancellations with a refund of the current period need approval and take up to two business days.",
        ("Confirm the subscription and ask for the reason (for churn reporting).",
         "Schedule the cancellation for the period end.",
         "If the customer asks for a refund of the current period, request approval first."),
        ("subscription", "cancel", "approval"),
    ),
    "api error": (
        "Diagnosing API errors",
        "HTTP 429 means you hit the rate limit of 100 requests per second: retry with exponential back-off. "
        "HTTP 401 means the API key is missing or revoked: create a new key in the developer console. "
        "For HTTP 500 errors, send us the request id from the response header.",
        ("Ask for the request id, the endpoint and the HTTP status code.",
         "429: explain rate limits and back-off; 401: check the key status.",
         "5xx with a request id: hand over to Engineering L3 with the logs."),
        ("api", "developer", "errors"),
    ),
    "invoice copy": (
        "Sending a copy of an invoice",
        "All invoices are available under Billing > Invoices as PDF downloads. We can also email a copy to the "
        "billing contact on your account.",
        ("Find the invoice by number or month.",
         "Email the PDF to the billing contact on file, never to a new address without verification."),
        ("billing", "invoice", "self-service"),
    ),
    "address change": (
        "Changing a delivery or billing address",
        "You can change your address under Settings > Addresses. Orders that have already shipped keep the old "
        "address; for those we can ask the carrier to redirect the parcel.",
        ("Verify the customer's identity before changing an address.",
         "Update the address; check open orders that have not shipped yet.",
         "For shipped orders, request a carrier redirect."),
        ("account", "address", "delivery"),
    ),
    "outage report": (
        "Responding to an outage report",
        "We are aware of a service disruption and our engineers are working on it. You can follow live updates "
        "on the status page; we will notify you when service is restored.",
        ("Check the status page and the incident channel for a known outage.",
         "Link the ticket to the open incident instead of troubleshooting individually.",
         "If no incident is open, escalate to Engineering L3 with the affected region and time."),
        ("outage", "incident", "status"),
    ),
    "security concern": (
        "Handling a suspected account compromise",
        "We have secured your account: all sessions were signed out and your password must be changed at the "
        "next sign-in. Please review recent activity and enable two-factor authentication.",
        ("Sign out all sessions and force a password change.",
         "Review recent logins and payment changes with the customer.",
         "Hand over to Security L3 for any confirmed unauthorised access."),
        ("security", "account", "fraud"),
    ),
    "order status": (
        "Checking the status of an order",
        "You can see the status of every order under Orders. Orders ship within 2 business days; once shipped "
        "you receive an email with the tracking link.",
        ("Look up the order and its fulfilment status.",
         "Share the tracking link if shipped, or the expected ship date if not."),
        ("orders", "delivery", "self-service"),
    ),
}

# General articles every agent uses; the data-export one only brushes the knowledge-gap intent's topic.
_GENERAL: tuple[ArticleSpec, ...] = (
    ArticleSpec(
        title="Waiting for the customer: follow-up policy",
        body="## When to use\nA ticket needs information only the customer can give.\n\n## Steps\n"
        "1. Ask for everything you need in one message.\n2. Set the ticket to *Wait for customer*.\n"
        "3. Send a reminder after 2 business days and close after 7 days without answer.",
        intents=(),
        tags=("policy", "waiting"),
        activities=("Wait for customer", "Customer replied"),
    ),
    ArticleSpec(
        title="Escalating to second and third line",
        body="## When to escalate\nEscalate only when the first line cannot solve the ticket with the published "
        "articles: a defect, a security incident or an approval above your limit.\n\n## Steps\n"
        "1. Write what you already tried.\n2. Pick the resolving team, not the nearest one.\n"
        "3. Never escalate a ticket a published article answers.",
        intents=(),
        tags=("policy", "escalation"),
        activities=("Escalate",),
    ),
    ArticleSpec(
        title="Data retention and privacy FAQ",
        body="## Retention\nWe keep account data while the account is active and delete it 90 days after closure."
        "\n\n## Privacy requests\nPrivacy requests from the data subject are answered within 30 days.",
        intents=(),
        tags=("privacy", "policy"),
    ),
)


def _intent_article(intent: str, *, agent_steps: bool = False) -> ArticleSpec:
    title, answer, steps, tags = _CONTENT[intent]
    labels: dict[int, str] = {}
    if agent_steps:
        # The planted steps the log records are named after the article's steps (in the article's order).
        labels = {st.article_step: st.activity for st in AGENT_STEPS.get(intent, ()) if st.article_step is not None}
    lines = [f"{i}. {labels[i - 1]}: {s}" if i - 1 in labels else f"{i}. {s}" for i, s in enumerate(steps, 1)]
    body = (
        f"## Applies to\nTickets about: {intent}.\n\n"
        f"## Steps for agents\n" + "\n".join(lines) + "\n\n"
        f"## Answer for the customer\n{answer}\n"
    )
    activities = tuple(labels[i] for i in sorted(labels)) + ("Solution proposed",) + (
        ("Approval requested",) if "approval" in tags else ())
    return ArticleSpec(title=title, body=body, intents=(intent,), tags=tags, activities=activities)


def knowledge_base(config: SimConfig | None = None) -> list[ArticleSpec]:
    """Articles of the simulated help centre: one per intent except the configured knowledge-gap intent.

    With `config.agent_steps` each article names the planted agent steps it describes (in its step list and its
    activities), as a help centre written alongside the log would.
    """
    cfg = config or SimConfig()
    out = [_intent_article(spec.name, agent_steps=cfg.agent_steps) for spec in INTENTS
           if spec.name != cfg.knowledge_gap_intent and spec.name in _CONTENT]
    return out + list(_GENERAL)
