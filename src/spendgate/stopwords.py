"""English function words: the words that say little about what a text is about.

The cache verifier (is this cached question the same question?) and the trim compressor
(which sentences answer the question?) both drop them before comparing words. They share the
core list here; each adds the few words its own data taught it to ignore, so each keeps
exactly the set it was trained and tuned with.
"""

from __future__ import annotations

__all__ = ["FUNCTION_WORDS"]

FUNCTION_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "by", "with", "from", "into",
    "than", "then", "as", "so", "if", "and", "or",
    "is", "are", "was", "were", "be", "been", "being", "do", "does", "did",
    "i", "me", "my", "you", "your", "he", "his", "she", "her", "it", "its", "we", "our",
    "they", "their", "this", "that", "these", "those", "there",
    "what", "how", "why", "which", "who", "when", "where",
    "can", "could", "should", "would", "will", "shall", "may", "might", "must",
})  # fmt: skip
"""Articles, prepositions, conjunctions, auxiliaries, pronouns and question words."""
