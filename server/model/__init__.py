"""Model files and what follows from them: GGUF facts, offload and slot plans, chat formats, prompts.

Imports only the top-level settings and errors; never the engine or the web framework.
"""
