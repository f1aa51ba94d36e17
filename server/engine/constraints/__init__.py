"""Constrained sampling: a request's grammar, llama.cpp's grammar sampler, and sampling a sequence under it."""
