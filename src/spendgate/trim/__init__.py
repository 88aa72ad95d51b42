"""Fewer tokens in and out: question-aware compression, history windows, output limits."""
