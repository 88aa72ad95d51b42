"""Deterministic long context for the trim tests: ten "documents" of plausible sentences, one
of which answers the question."""

from __future__ import annotations

import random

QUESTION = "Who received the first Nobel Prize in Physics?"
ANSWER = "Wilhelm Conrad Röntgen"
GOLD = (
    "The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen, of "
    "Germany, who received 150,782 SEK."
)

_SUBJECTS = [
    "The harbour",
    "A local council",
    "The railway company",
    "The orchestra",
    "A textile mill",
    "The museum",
    "The university library",
    "A shipping firm",
]
_VERBS = ["expanded", "rebuilt", "reorganised", "closed", "relocated", "modernised"]
_OBJECTS = [
    "its northern wing",
    "the old warehouse",
    "several branch lines",
    "the east gallery",
    "its main workshop",
    "the reading rooms",
]
_TAILS = [
    "after a long dispute over funding",
    "with help from regional investors",
    "despite strong local opposition",
    "during a period of rapid growth",
]


def documents(seed: int = 7, n_docs: int = 10, sentences: int = 8, gold_at: int = 6) -> str:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        body = [
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} in "
            f"{rng.randint(1850, 1990)} {rng.choice(_TAILS)}."
            for _ in range(sentences)
        ]
        title = f"Document [{d + 1}] Town history {d + 1}"
        if d == gold_at:
            title = f"Document [{d + 1}] List of Nobel laureates in Physics"
            body[3] = GOLD
        docs.append(title + "\n" + " ".join(body))
    return "\n\n".join(docs)
