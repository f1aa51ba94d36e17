"""The model library: every GGUF a server can serve, loaded on demand within a memory budget.

catalog.py finds the models (MODELS_DIR, the Hugging Face cache, the presets file),
presets.py reads their per-model settings, memory.py estimates and measures what each
takes, library.py loads, keeps and unloads their engines, pull.py fetches new ones.
"""
