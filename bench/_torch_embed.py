"""sentence-transformers on PyTorch's CPU build, driven by bench/embeddings.py: run in the bench's own
virtual environment (bench/requirements-embeddings.txt), never imported by the server.

    python bench/_torch_embed.py CHECKPOINT THREADS   # reads the texts (a JSON list) from the first
                                                     # line of stdin; then each line "run" embeds 8
                                                     # requests of 32 texts and prints texts/s

The model is the checkpoint's own sentence-transformers pipeline (for all-MiniLM-L6-v2: the
BERT encoder, mean pooling, L2 normalization), on the same threads as the servers.
"""

from __future__ import annotations

import json
import sys
import time


def main(checkpoint: str, threads: int) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = SentenceTransformer(checkpoint, device="cpu")
    pool = json.loads(sys.stdin.readline())
    model.encode(pool[:32], batch_size=32)  # warm up
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        for r in range(8):
            model.encode(pool[r * 32 : r * 32 + 32], batch_size=32)
        print(json.dumps({"texts_per_s": 8 * 32 / (time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
