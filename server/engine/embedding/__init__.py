"""Embeddings and reranking in the engine: requests and jobs (jobs.py), inputs made into token
sequences that fit (inputs.py), the llama.cpp context that embeds them in batches (embedder.py),
which models embed and how they load (model.py), and the engine's side of it (engine.py)."""
