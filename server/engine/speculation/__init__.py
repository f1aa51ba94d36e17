"""Speculative decoding: where drafts come from (n-grams, a draft model), what they cost, and how they are kept."""
