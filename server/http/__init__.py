"""The HTTP layer: the app factory, one module per dialect (ours, OpenAI's), operations routes.

Dialects only translate (JSON -> the engine's Request, its events -> their wire format);
nothing here calls llama.cpp.
"""
