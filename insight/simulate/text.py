"""Ticket subjects and bodies: per-intent paraphrases, slot fillers, borrowed wording, PII-like strings, typos.

All randomness comes from a pre-drawn uniform matrix (one row per ticket), so text is deterministic for a seed and
the per-ticket Python work is a handful of list look-ups and one `str.format`.
"""

from __future__ import annotations

import numpy as np

# Per intent: subjects, opening statements, extra detail sentences, and "cues": sentences that other intents'
# ambiguous tickets borrow (a refund ticket that also mentions the login, ...), which is what misleads routing.
INTENT_TEXT: dict[str, dict[str, list[str]]] = {
    "billing dispute": {
        "subjects": ["Wrong charge on my bill", "Billing error", "Charged twice", "Dispute of charge {amount}",
                     "Incorrect amount on invoice {invoice}", "Why was I billed {amount}?", "Overcharged this month",
                     "Bill is wrong again"],
        "openers": ["I was charged {amount} on {date} but my plan should cost much less.",
                    "My latest bill shows a charge of {amount} that I do not recognise.",
                    "You billed me twice for {product} this month.",
                    "The invoice {invoice} contains a fee I never agreed to.",
                    "I want to dispute the charge of {amount} for {product}.",
                    "there is an extra charge on my statement for {product}, please explain",
                    "My card was debited {amount} twice on {date}.",
                    "The monthly fee went up without any notice, I am disputing this charge."],
        "details": ["The amount on my bank statement does not match what I agreed to.",
                    "I have checked my usage and it cannot be that high.",
                    "Please correct the bill and send me an updated invoice.",
                    "This is the second billing mistake this year.",
                    "I will not pay the disputed part until this is sorted."],
        "cues": ["I was also charged {amount} that looks wrong.", "and the bill this month was higher than usual"],
    },
    "refund request": {
        "subjects": ["Refund please", "Request for refund", "I want my money back", "Refund for order {order}",
                     "Refund not received", "Money back for {product}", "Return and refund"],
        "openers": ["I returned order {order} on {date} and would like a refund of {amount}.",
                    "Please refund the {amount} I paid for {product}.",
                    "I cancelled within the trial period, so I expect a full refund.",
                    "I am still waiting for the refund of {amount} you promised.",
                    "Can I get my money back for {product}? It does not do what was advertised.",
                    "I'd like a refund for order {order}, the item never worked.",
                    "requesting refund of {amount} for {product} purchased {date}"],
        "details": ["The return label says it was delivered back to you.",
                    "Please put the money back on the original card.",
                    "Your website says refunds take 5 days but it has been three weeks.",
                    "I have the receipt if you need it."],
        "cues": ["Also I would like a refund for this.", "and I want my money back for the time it was down"],
    },
    "password reset": {
        "subjects": ["Password reset", "Forgot my password", "Reset password please", "Can't remember password",
                     "New password needed", "Password reset link not arriving"],
        "openers": ["I forgot my password and need to reset it.",
                    "The password reset link never arrives in my inbox.",
                    "Please reset my password for {product}.",
                    "my password expired and the reset link says it is invalid",
                    "I need a new password, the old one does not work after the update.",
                    "How do I change my password? The reset page just reloads."],
        "details": ["I already checked the spam folder.",
                    "I tried the reset three times today.",
                    "The reset email goes to an old address I no longer use."],
        "cues": ["I also had to reset my password twice.", "the password reset did not help either"],
    },
    "login issue": {
        "subjects": ["Cannot log in", "Login not working", "Locked out of account", "Login error {code}",
                     "Account locked", "Sign-in fails", "2FA code not accepted"],
        "openers": ["I cannot log in to {product} since {date}.",
                    "My account is locked after a few attempts to sign in.",
                    "Login fails with error {code} even with the correct password.",
                    "The two-factor code is never accepted when I sign in.",
                    "I get logged out immediately after logging in to {product}.",
                    "i cant sign in to my account anymore, it just says access denied"],
        "details": ["I have tried different browsers and the app.",
                    "The account shows as locked in the app as well.",
                    "I need access urgently because I manage the account for my family.",
                    "My username is correct, I checked it."],
        "cues": ["I also cannot log in to my account right now.", "and the login keeps failing since {date}"],
    },
    "delivery delay": {
        "subjects": ["Where is my order?", "Delivery late", "Order {order} not delivered", "Parcel delayed",
                     "Still waiting for delivery", "Shipment stuck"],
        "openers": ["My order {order} was supposed to arrive on {date} and it still has not.",
                    "The tracking for {order} has not moved for a week.",
                    "The courier says the parcel is delayed again.",
                    "I ordered {product} two weeks ago and nothing has arrived.",
                    "delivery of order {order} is late, tracking says in transit since {date}"],
        "details": ["I was at home all day and no one came.",
                    "I need it before the weekend.",
                    "The delivery estimate keeps changing.",
                    "Please tell me when it will actually be delivered."],
        "cues": ["The delivery was also late by a week.", "and the parcel with order {order} is still not here"],
    },
    "damaged item": {
        "subjects": ["Item arrived damaged", "Broken on arrival", "Damaged {product}", "Order {order} damaged",
                     "Box crushed, product broken"],
        "openers": ["The {product} I received is damaged, the screen is cracked.",
                    "Order {order} arrived with a broken part.",
                    "The box was crushed and the device inside does not turn on.",
                    "my {product} came broken, photos attached",
                    "The item from order {order} is scratched and the cable is missing."],
        "details": ["I have photos of the packaging.",
                    "I would like a replacement as soon as possible.",
                    "It looks like it was dropped during transport."],
        "cues": ["Also the item arrived damaged.", "and the box was broken when it arrived"],
    },
    "plan upgrade": {
        "subjects": ["Upgrade my plan", "Change to {plan} plan", "Plan upgrade", "More data please",
                     "Switch subscription tier"],
        "openers": ["I would like to upgrade to the {plan} plan.",
                    "Can I switch my {product} subscription to {plan}?",
                    "We need more seats, please move us to {plan}.",
                    "how do I upgrade my plan, the button does not work",
                    "I want to change my plan to {plan} starting {date}."],
        "details": ["Please tell me the price difference.",
                    "We are a team of 12 now.",
                    "Keep the same billing date if possible."],
        "cues": ["I was thinking of upgrading my plan as well.", "and I want to change to the {plan} plan"],
    },
    "cancel subscription": {
        "subjects": ["Cancel my subscription", "Cancellation request", "Please cancel", "Terminate contract",
                     "Stop my membership", "End subscription for {product}"],
        "openers": ["Please cancel my {product} subscription effective {date}.",
                    "I want to terminate my contract and stop all payments.",
                    "I no longer need {product}, cancel it please.",
                    "cancel my subscription, I have tried to do it online and it does not work",
                    "We are moving to another provider, please end our subscription."],
        "details": ["Confirm the cancellation in writing.",
                    "Do not charge my card again.",
                    "I was told on the phone it was cancelled but I was charged again."],
        "cues": ["I am thinking about cancelling my subscription because of this.",
                 "otherwise I will cancel the contract"],
    },
    "api error": {
        "subjects": ["API returns {code}", "API error", "Integration failing", "500 errors from endpoint",
                     "Webhook not firing", "Rate limit errors"],
        "openers": ["Our calls to the /orders endpoint return error {code} since {date}.",
                    "The API started returning 500 errors for {product}.",
                    "Webhooks stopped firing for our integration.",
                    "we get HTTP {code} on every POST request with a valid token",
                    "The API rate limit is hit even though we send few requests."],
        "details": ["Request id is attached.",
                    "Nothing changed in our integration code.",
                    "It works in the sandbox but not in production.",
                    "Our developers checked the authentication headers."],
        "cues": ["The API also returns errors.", "and our integration throws error {code}"],
    },
    "data export": {
        "subjects": ["Data export", "Export my data", "CSV export fails", "Download all records",
                     "Bulk export not working", "GDPR data copy"],
        "openers": ["I need a full export of our data from {product}.",
                    "The CSV export stops at 10,000 rows.",
                    "How can I export all our records including attachments?",
                    "The export job has been pending since {date}.",
                    "please send me a copy of all my personal data",
                    "Export to CSV produces a corrupt file for {product}."],
        "details": ["We need it for an audit.",
                    "The file should include the history, not just the current state.",
                    "We tried the export in several formats."],
        "cues": ["We also need an export of our data.", "and I need a copy of my data"],
    },
    "invoice copy": {
        "subjects": ["Invoice copy", "Need a copy of invoice {invoice}", "Send invoice", "Missing invoice",
                     "Receipt request", "VAT invoice needed"],
        "openers": ["Can you send me a copy of invoice {invoice}?",
                    "I need the invoices for the last three months for my accountant.",
                    "Please resend the invoice for {product} from {date}.",
                    "i cant find my invoice in the portal, can you email it",
                    "I need a VAT invoice with our company address."],
        "details": ["A PDF is fine.",
                    "Our company number must be on it.",
                    "My accountant needs it by Friday."],
        "cues": ["Please also send me the invoice.", "and I need a copy of invoice {invoice}"],
    },
    "address change": {
        "subjects": ["Change of address", "Update my address", "New delivery address", "I moved",
                     "Update billing address"],
        "openers": ["I moved, please update my address to 12 Elm Street.",
                    "Please change the delivery address for future orders.",
                    "Update the billing address on my account from {date}.",
                    "new address for my account: 4 Harbour Road, flat 2",
                    "How do I change my address? The form gives an error."],
        "details": ["The old address should no longer be used.",
                    "Both billing and delivery addresses need to change."],
        "cues": ["I have also moved to a new address.", "and please update my address"],
    },
    "outage report": {
        "subjects": ["Service down", "Outage", "{product} not working at all", "Nothing loads", "Network down",
                     "Total outage in our area"],
        "openers": ["{product} has been completely down since this morning.",
                    "Nothing loads, the whole service seems to be down.",
                    "Our router has no connection and the status lights are red.",
                    "all users in our office lost access to {product} at the same time",
                    "Is there an outage? The service stopped working around {date}."],
        "details": ["Our whole team is blocked.",
                    "Neighbours have the same problem.",
                    "The status page says everything is fine but it is not."],
        "cues": ["It looks like the whole service was down.", "and the service was down for hours"],
    },
    "security concern": {
        "subjects": ["Suspicious activity", "Account hacked?", "Security issue", "Phishing email",
                     "Unknown login from abroad", "Unauthorised access"],
        "openers": ["I got an alert about a login from a country I have never been to.",
                    "Someone changed my account details without my permission.",
                    "I received a phishing email pretending to be from you.",
                    "i think my account was hacked, there are orders i did not make",
                    "There is an unknown device connected to my {product} account."],
        "details": ["I have not shared my password with anyone.",
                    "Please check the access logs.",
                    "I am worried my card details were exposed."],
        "cues": ["I am worried this is a security problem.", "and there was a suspicious login on my account"],
    },
    "order status": {
        "subjects": ["Order status", "Status of order {order}", "Has my order shipped?", "Order confirmation",
                     "When will {order} ship?"],
        "openers": ["Can you tell me the status of order {order}?",
                    "I placed an order on {date} and got no confirmation.",
                    "Has my order for {product} shipped yet?",
                    "what is the status of my order, the site just says processing",
                    "I want to check whether order {order} went through."],
        "details": ["I did not receive a tracking number.",
                    "The payment was taken already."],
        "cues": ["Also what is the status of my order?", "and has order {order} shipped"],
    },
}

# Wording shared by a family of intents; some tickets open with it instead of intent-specific wording, so short
# tickets are genuinely ambiguous between neighbours (refund vs billing dispute, login vs password reset, ...).
FAMILIES: dict[str, dict[str, list[str]]] = {
    "money": {
        "intents": ["billing dispute", "refund request", "invoice copy", "cancel subscription"],
        "subjects": ["Payment question", "About my account balance", "Money issue", "Question about {product}"],
        "openers": ["I have a question about a payment for {product}.", "Something is off with my account balance.",
                    "About the {amount} for {product}.", "I need help with a charge from {date}."],
        "details": ["I would like this sorted before my next payment.", "Please check my account history.",
                    "I pay by direct debit."],
    },
    "access": {
        "intents": ["password reset", "login issue", "security concern"],
        "subjects": ["Account access", "Problem with my account", "Can't get in", "Account problem"],
        "openers": ["I can't get into my account.", "Something is wrong with my account access.",
                    "My {product} account does not let me in since {date}."],
        "details": ["I have tried everything I know.", "I mostly use the mobile app.",
                    "It worked fine last week."],
    },
    "shipping": {
        "intents": ["delivery delay", "damaged item", "order status", "address change"],
        "subjects": ["My order", "Question about order {order}", "Order problem", "About my delivery"],
        "openers": ["Question about my order {order}.", "There is a problem with my recent order {order}.",
                    "I need help with the delivery of {product}."],
        "details": ["The order was placed on the website.", "I paid for express shipping.",
                    "The tracking page is not helpful."],
    },
    "tech": {
        "intents": ["api error", "outage report", "data export"],
        "subjects": ["Technical problem", "{product} not working properly", "Errors in {product}"],
        "openers": ["{product} is not working properly for us.", "We are seeing errors in {product} since {date}.",
                    "Our team has a technical problem with {product}."],
        "details": ["This affects our production environment.", "We are on the enterprise plan.",
                    "Our developers are blocked."],
    },
    "plan": {
        "intents": ["plan upgrade", "cancel subscription"],
        "subjects": ["Change my subscription", "About my plan"],
        "openers": ["I want to change my subscription for {product}.", "I'd like to discuss my plan."],
        "details": ["I have been on the current plan for two years.", "The price matters to me."],
    },
}
FAMILY_OF: dict[str, dict[str, list[str]]] = {i: fam for fam in FAMILIES.values() for i in fam["intents"]}

GREETINGS = ["Hi,", "Hello,", "Dear support,", "Good morning,", "Hi team,", "Hello there,", "", "", ""]
CLOSINGS = ["Thanks.", "Thank you!", "Regards, {name}", "Best, {name}", "Please help.", "Thanks in advance",
            "Cheers", "", "", "Kind regards,\n{name}"]
GENERIC = ["This is urgent.", "I have been a customer for many years.", "I already called twice.",
           "Nobody answered my last email.", "Please reply quickly.", "This is very frustrating.",
           "I attached a screenshot.", "Happy to provide more details."]
VAGUE_SUBJECTS = ["Help", "Problem", "Urgent!!", "Question", "Issue with my account", "Please call me",
                  "Not working", "Complaint"]
VAGUE_BODIES = ["It is not working, please help.", "Please call me back about my account.",
                "I have a problem with {product}, can someone contact me?", "Same issue as last time.",
                "Following up on my previous ticket.", "Something is wrong, please check."]
PII = ["You can reach me at {email}.", "My number is {phone}, call any time.", "Contact: {email} / {phone}",
       "Please call me on {phone}.", "Reply to {email} not the old address.", "Phone: {phone}"]
FIRST = ["anna", "ben", "carla", "david", "emma", "farid", "grace", "hugo", "ines", "jonas", "kim", "liam",
         "maria", "noah", "olga", "pablo"]
LAST = ["smith", "meyer", "rossi", "novak", "garcia", "kowalski", "jensen", "dubois", "okafor", "tanaka"]
DOMAINS = ["example.com", "mail.example.org", "example.net"]
DATES = ["Monday", "last week", "March 3", "yesterday", "the 14th", "2 Feb", "Friday", "the weekend",
         "01/12", "this morning"]
CODES = ["403", "500", "502", "E1042", "AUTH-17", "429", "TIMEOUT", "0x80070005"]
AREAS = ["212", "312", "415", "617", "303"]
PLANS = ["Premium", "Business", "Family", "Pro", "Unlimited"]

# Number of uniform draws a ticket consumes; columns of the matrix passed to `render_tickets`.
N_DRAWS = 43


def _typo(text: str, u1: float, u2: float, u3: float) -> str:
    """One realistic slip in a random word of at least 4 letters: swap, drop or double a letter."""
    words = text.split(" ")
    n = len(words)
    first = int(u1 * n)
    # Walk from a random word to the next one long enough to misspell (cheaper than listing candidates).
    for off in range(n):
        i = (first + off) % n
        if len(words[i]) >= 4 and words[i].isalpha():
            break
    else:
        return text
    w = words[i]
    j = 1 + int(u2 * (len(w) - 2))
    kind = int(u3 * 3)
    if kind == 0:
        w = w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :]
    elif kind == 1:
        w = w[:j] + w[j + 1 :]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _pick(options: list[str], u: float) -> str:
    return options[int(u * len(options))]


def ticket_fields(draws: np.ndarray, subjects: list[str], bodies: list[str]) -> tuple[list[str], list[str | None]]:
    """The customer's name and the order number a helpdesk form would hold, from the draws that wrote the text.

    The name is the one a signature uses (first and last); the order number only when the ticket mentions it.
    """
    names: list[str] = []
    orders: list[str | None] = []
    for u, subject, body in zip(np.asarray(draws, dtype=float).tolist(), subjects, bodies, strict=True):
        names.append(f"{_pick(FIRST, u[7]).title()} {_pick(LAST, u[8]).title()}")
        order = f"#{int(u[2] * 900000) + 100000}"
        orders.append(order if order in subject or order in body else None)
    return names, orders


def render_tickets(
    *,
    intents: list[str],
    cue_intents: list[str | None],
    products: list[str],
    draws: np.ndarray,
    typo_share: float,
    pii_share: float,
    vague_share: float,
    family_share: float,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Subject and body per ticket, plus flags (has typo, has PII, vague) for the ground truth."""
    n = len(intents)
    subjects: list[str] = [""] * n
    bodies: list[str] = [""] * n
    typo = np.zeros(n, dtype=bool)
    pii = np.zeros(n, dtype=bool)
    vague = np.zeros(n, dtype=bool)
    # Plain Python floats: indexing a list is several times faster than indexing numpy rows element by element.
    rows = np.asarray(draws, dtype=float).tolist()
    for k in range(n):
        u = rows[k]
        spec = INTENT_TEXT[intents[k]]
        first = _pick(FIRST, u[7])
        slots = {
            "product": products[k],
            "amount": f"${5 + u[0] * 400:.2f}" if u[1] < 0.5 else f"{5 + u[0] * 400:.0f} EUR",
            "order": f"#{int(u[2] * 900000) + 100000}",
            "invoice": f"INV-{int(u[3] * 90000) + 10000}",
            "date": _pick(DATES, u[4]),
            "code": _pick(CODES, u[5]),
            "plan": _pick(PLANS, u[6]),
            "name": first.title(),
            "email": f"{first}.{_pick(LAST, u[8])}@{_pick(DOMAINS, u[9])}",
            # Numbers from the ranges reserved for fiction (UK 07700 900xxx, US 555-01xx).
            "phone": (f"+44 7700 900{int(u[10] * 1000):03d}" if u[20] < 0.5
                      else f"({_pick(AREAS, u[11])}) 555-01{int(u[10] * 100):02d}"),
        }
        if u[12] < vague_share:
            vague[k] = True
            subject = _pick(VAGUE_SUBJECTS, u[13])
            parts = [_pick(VAGUE_BODIES, u[14])]
        else:
            subject = _pick(spec["subjects"], u[13])
            length = u[14]
            opener = _pick(spec["openers"], u[15])
            detail = _pick(spec["details"], u[17])
            if u[41] < family_share:
                fam = FAMILY_OF[intents[k]]
                opener = _pick(fam["openers"], u[15])
                if u[42] < 0.6:
                    subject = _pick(fam["subjects"], u[13])
                if u[42] < 0.5:
                    detail = _pick(fam["details"], u[17])
            if length < 0.25:  # one-liner
                parts = [opener]
            elif length < 0.65:
                parts = [_pick(GREETINGS, u[16]), opener, detail, _pick(CLOSINGS, u[18])]
            else:  # a paragraph
                parts = [_pick(GREETINGS, u[16]), opener, detail, _pick(GENERIC, u[19]),
                         spec["details"][(int(u[17] * len(spec["details"])) + 1 + int(u[40] * (len(spec["details"]) - 1))) % len(spec["details"])], _pick(CLOSINGS, u[18])]
        cue = cue_intents[k]
        if cue is not None:
            # Borrowed wording goes after the opener or at the end; sometimes into the subject too.
            sentence = _pick(INTENT_TEXT[cue]["cues"], u[21])
            if sentence[-1] not in ".!?":
                sentence += "."
            parts.insert(max(1, len(parts) - 1) if u[39] < 0.4 else min(2, len(parts)), sentence)
            if u[22] < 0.25:
                subject = f"{subject} / {_pick(INTENT_TEXT[cue]['subjects'], u[23])}"
        if u[24] < pii_share:
            pii[k] = True
            parts.insert(len(parts) - 1 if len(parts) > 1 else 1, _pick(PII, u[25]))
        body = " ".join(p for p in parts if p).format(**slots)
        subject = subject.format(**slots)
        if u[26] < typo_share:
            clean = body
            body = _typo(body, u[27], u[28], u[29])
            if u[30] < 0.5:
                body = _typo(body, u[31], u[32], u[33])
            if u[34] < 0.2:
                subject = _typo(subject, u[35], u[36], u[37])
            typo[k] = body != clean
        if u[38] < 0.12:
            body = body.lower()
        subjects[k] = subject
        bodies[k] = body
    return subjects, bodies, typo, pii, vague
