"""Write `src/spendgate/data/sample_prompts.jsonl`: the demo's traffic when the Chatbot Arena
prompts (`../shared/data/traffic/`) are absent, e.g. in a clone from a public host.

The prompts are written for this project: the first 40 by hand, the rest composed from
templates of the kinds of question real users send a product's assistant (how-to, errors,
explanations, code, summaries, drafts), so that a fresh clone's `make demo` has enough
traffic (240 prompts) for every technique of the recommended policy to act.

    python scripts/make_sample_prompts.py
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "spendgate" / "data" / "sample_prompts.jsonl"
TOTAL = 240

HOW_TO = (
    "How do I {act} in the {area} settings?",
    "Where can I {act}? I can't find it in {area}.",
    "Is there a way to {act} for all my companies at once?",
    "What's the fastest way to {act}?",
)
ACTS = (
    "export last quarter's transactions", "reconnect my bank feed", "change the VAT rate",
    "add my accountant as a user", "undo a closed month", "merge two duplicate transactions",
    "send an invoice reminder", "change my plan", "turn off invoice reminders",
    "import receipts by email", "set the default currency", "download a backup",
)  # fmt: skip
AREAS = ("billing", "banking", "tax", "users", "reports", "invoices")
ERRORS = (
    "I get '{err}' when I {act}. What does it mean?",
    "Since yesterday I see '{err}'. How do I fix it?",
)
ERRS = (
    "bank connection expired", "duplicate invoice number", "period is locked",
    "payment method declined", "rate limit exceeded", "export failed: file too large",
)  # fmt: skip
EXPLAIN = (
    "Explain {topic} in simple terms.",
    "What is the difference between {topic}?",
    "Give me three examples of {topic}.",
)
TOPICS = (
    "accrual and cash accounting", "a credit note and a refund", "gross and net margin",
    "depreciation", "a balance sheet and a profit and loss statement", "deferred revenue",
    "TCP and UDP", "a process and a thread", "an index and a primary key",
    "eventual consistency", "idempotency in APIs", "a mutex and a semaphore",
)  # fmt: skip
CODE = (
    "Write a Python function that {task}.",
    "Write a SQL query that {task}.",
    "In TypeScript, write a function that {task}.",
    "Review this idea: a cron job that {task}. What could go wrong?",
)
TASKS = (
    "groups invoices by customer and sums the unpaid amounts",
    "finds duplicate transactions with the same amount and date",
    "retries an HTTP call with exponential backoff",
    "parses a CSV of bank transactions and skips malformed rows",
    "rounds money amounts without using floats",
    "returns the top 5 customers by revenue this month",
    "validates an IBAN",
    "paginates results with a keyset cursor",
)  # fmt: skip
SUMMARY = (
    "Summarize this for a busy manager: {text}",
    "Turn these notes into a short email to the team: {text}",
)
TEXTS = (
    "our support queue doubled after the pricing change; most tickets ask about the new "
    "Team plan limits and bank feed reconnects; we hired two agents and wrote four macros",
    "Q3 revenue grew 12 percent, churn fell to 2.1 percent, the EU launch slipped to "
    "November because of VAT rules, and hiring is frozen except for support",
    "the incident on Tuesday was a bad deploy of the invoice service; rollback took 40 "
    "minutes; 1,200 reminders were sent twice; we added a canary step",
)  # fmt: skip
FOLLOW_UPS = ("Can you make that shorter?", "And what if I'm on the Starter plan?",
              "Can you give an example?", "Thanks! Anything else I should check?")  # fmt: skip


def composed(rng: random.Random) -> list[str]:
    pools = [
        [t.format(act=a, area=r) for t, a, r in itertools.product(HOW_TO, ACTS, AREAS)],
        [t.format(err=e, act=a) for t, e, a in itertools.product(ERRORS, ERRS, ACTS)],
        [t.format(topic=x) for t, x in itertools.product(EXPLAIN, TOPICS)],
        [t.format(task=x) for t, x in itertools.product(CODE, TASKS)],
        [t.format(text=x) for t, x in itertools.product(SUMMARY, TEXTS)],
    ]
    for pool in pools:
        rng.shuffle(pool)
    out: list[str] = []
    for i in itertools.count():
        pool = pools[i % len(pools)]
        if pool:
            out.append(pool.pop())
        if not any(pools):
            break
    return out


def main() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines()[:40] if line.strip()]
    rng = random.Random(14)
    for n, text in enumerate(composed(rng)[: TOTAL - len(rows)], start=len(rows)):
        turns = [text]
        if rng.random() < 0.25:
            turns.append(FOLLOW_UPS[rng.randrange(len(FOLLOW_UPS))])
        rows.append({"id": f"sample-{n:03d}", "turns": turns})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} prompts to {OUT}")


if __name__ == "__main__":
    main()
