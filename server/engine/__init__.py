"""The engine: one request type, the queue, the continuous-batching decoder over llama.cpp.

Imports the model package and the top-level settings and errors; never the web framework.
"""
