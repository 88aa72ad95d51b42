"""Response caching: exact and semantic, with a learned verifier (see docs/cache.md)."""
