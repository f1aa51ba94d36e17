"""Embeddings on the engine's worker: a llama.cpp context in embeddings mode, and the packing of
every waiting sequence (of one request or of many) into one batch per step.

The context is the model's second one, beside the generating context of a chat model (or the
only one of an embedding model): embeddings need all of a sequence's tokens in one physical
batch, their own pooling and a KV cache cleared for each batch, none of which suits the
generation context's slots. Its physical batch (n_ubatch) holds the longest sequence
allowed and a filler row, so llama.cpp's "n_ubatch >= n_tokens" abort cannot be reached: the
caller's thread cuts or refuses longer ones (server/engine/embedding/inputs.py).

A request's vectors never depend on what shared its batch, bit for bit (tested in
tests/server/test_embedding_engine.py and test_embedding_layout.py). On the CPU, what
would make them depend:
- attention: ggml-cpu's flash attention picks a per-row kernel below 64 rows and a tiled one
  from 64 rows up, and sums a key tile's weights in lanes counted from the tile's first cell
  -> the batch-invariant switch of deploy/llama-patches/0001 (server/engine/invariance.py):
  the tiled kernel at any row count, summing from a row's first nonzero weight; and each
  sequence sits where that kernel computes it as it does alone (within one key tile, or from
  a tile boundary: server/engine/embedding/layout.py); filler rows (a sequence of their own,
  which nobody attends to) fill the gaps. Without flash attention the softmax and the KQV
  product group a row's terms by SIMD lanes counted from the start of the batch, and every
  row pays for every other sequence's cells: 2.7x slower here.
- pooling: llama.cpp's mean pooling is a matrix product over the whole batch -> the context
  returns each token's vector (pooling "none") and the mean, first or last is taken here,
  per sequence, always in the same order;
- the weight products take another kernel for a single row -> a batch of one row gets a
  filler row; the rank head multiplies one row per sequence, so a rank batch always has a
  filler sequence;
- quantized weights are repacked, and the tiled K-quant kernel kept, only where the build makes
  them batch-invariant, as for generation (server/engine/invariance.py): the model is the same one.
BATCH_INVARIANT=off (or a llama.cpp without the patch) packs sequences back to back up to the
whole physical batch, its kernels as llama.cpp picks.

Which inputs share a batch: the job served longest ago leads (a new one leads at once, so a
one-text request waiting behind bulk ones gets into the next batch), and inputs of every job
fill it, closest fit first.
"""

from __future__ import annotations

from dataclasses import dataclass

import llama_cpp.llama_cpp as lc
import numpy as np
from llama_cpp import _internals

from server.engine import invariance
from server.engine.decoder_types import DecoderStats
from server.engine.embedding import layout
from server.engine.embedding.inputs import TokenFacts
from server.engine.embedding.jobs import POOLING_IDS, EmbedJob
from server.engine.embedding.layout import Candidate
from server.errors import GenerationFailed


@dataclass(frozen=True)
class EmbedderConfig:
    pooling: str  # a POOLING_IDS name
    limit: int  # the most tokens one sequence may have
    n_threads: int = 2
    invariant: bool = True  # BATCH_INVARIANT, where it applies: off packs sequences tight, kernels as llama.cpp picks


class Embedder:
    """Owned by the engine's worker thread, except `facts` and the properties (any thread)."""

    def __init__(self, model: _internals.LlamaModel, cfg: EmbedderConfig, owns_model: bool = False) -> None:
        self.cfg, self._model, self._owns_model = cfg, model, owns_model
        self.rank = cfg.pooling == "rank"
        # the patched attention makes the layout exact; a build without it gets llama.cpp's own paths
        self.invariant = cfg.invariant and invariance.available()
        self.n_ubatch = cfg.limit + 1  # the longest sequence, and a filler row
        n_seq_max = min(lc.llama_max_parallel_sequences(), self.n_ubatch)
        self.max_sequences = n_seq_max - 1  # and a filler
        self._ctx = _internals.LlamaContext(model=model, params=self._params(n_seq_max), verbose=False)
        self._c = self._ctx.ctx
        self._mem = lc.llama_get_memory(self._c)  # None for encoders (BERT): no KV cache
        self.n_embd = lc.llama_model_n_embd_out(model.model)
        self.n_cls_out = max(lc.llama_model_n_cls_out(model.model), 1)
        vocab = model.vocab
        self._filler = max(lc.llama_vocab_pad(vocab), 0)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_ubatch, embd=0, n_seq_max=1)
        b = self._batch.batch
        self._tok = np.ctypeslib.as_array(b.token, shape=(self.n_ubatch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(self.n_ubatch,))
        np.ctypeslib.as_array(b.logits, shape=(self.n_ubatch,))[:] = 1  # every row is an output
        np.ctypeslib.as_array(b.n_seq_id, shape=(self.n_ubatch,))[:] = 1
        self._seq_ids = [b.seq_id[i] for i in range(self.n_ubatch)]
        self._jobs: list[EmbedJob] = []  # with inputs still to place, in order of arrival
        self._stats = DecoderStats.empty(0)  # its batches, as the decoder counts its steps
        self.facts = self._token_facts()

    def _params(self, n_seq_max: int) -> lc.llama_context_params:
        p = lc.llama_context_default_params()
        p.n_ctx = p.n_batch = p.n_ubatch = self.n_ubatch
        p.n_seq_max = n_seq_max
        p.n_threads = p.n_threads_batch = self.cfg.n_threads
        p.embeddings = True
        p.pooling_type = POOLING_IDS["rank"] if self.rank else POOLING_IDS["none"]  # pooled here otherwise
        p.flash_attn_type = 1 if self.invariant else -1  # on: see the module docstring; else auto
        p.kv_unified = True  # one KV stream for every sequence of a batch (chat models)
        return p

    def _token_facts(self) -> TokenFacts:
        model, vocab = self._model, self._model.vocab

        def tokenize(text: str, add_special: bool) -> list[int]:
            return list(model.tokenize(text.encode("utf-8"), add_special, True))

        def token(t: int, wanted: bool = True) -> int | None:
            return t if wanted and t >= 0 else None

        raw = lc.llama_model_chat_template(model.model, b"rerank")
        return TokenFacts(
            tokenize,
            model.n_vocab(),
            self.cfg.limit,
            add_eos=bool(lc.llama_vocab_get_add_eos(vocab) or lc.llama_vocab_get_add_sep(vocab)),
            bos=token(lc.llama_vocab_bos(vocab), bool(lc.llama_vocab_get_add_bos(vocab))),
            eos=token(lc.llama_vocab_eos(vocab), bool(lc.llama_vocab_get_add_eos(vocab))),
            sep=token(lc.llama_vocab_sep(vocab), bool(lc.llama_vocab_get_add_sep(vocab))),
            rerank_template=raw.decode("utf-8") if raw else None,
        )

    # --- the worker thread ---------------------------------------------------------------
    def add(self, job: EmbedJob) -> None:
        self._jobs.append(job)

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def fail_all(self, error: Exception) -> None:
        while self._jobs:
            self._jobs.pop().fail(error)

    def step(self) -> int:
        """One batch of waiting sequences through llama.cpp; returns its rows (0: nothing to do)."""
        placed = self._pack()
        if not placed:
            return 0
        n = self._write(placed)
        self._stats.start()
        invariance.use(self.invariant)  # the tiled attention at any row count, which the layout is made for
        if self._mem is not None:  # a chat model: each batch starts from an empty KV cache
            lc.llama_memory_clear(self._mem, True)
            rc = lc.llama_decode(self._c, self._batch.batch)
        else:
            rc = lc.llama_encode(self._c, self._batch.batch)
        if rc != 0:
            for (job, _), _, _ in placed:
                job.fail(GenerationFailed())
            raise RuntimeError(f"llama.cpp failed to embed a batch (code {rc})")
        self._deliver(placed, n)
        self._stats.record(n, len(placed))
        return n

    @property
    def steps(self) -> int:
        """Batches through llama.cpp so far."""
        return self._stats.steps

    def stats(self) -> DecoderStats:
        """Its batches as decoder statistics (any thread): rows per batch include the fillers."""
        return self._stats.snapshot(0, len(self._jobs), 0)

    def _pack(self) -> list[tuple[tuple[EmbedJob, int], int, list[int]]]:
        """((job, input index), first row, tokens) for the sequences of this batch (see the
        module docstring for who goes first)."""
        self._drop_ended()
        if not self._jobs:
            return []
        jobs = sorted(self._jobs, key=lambda j: j.last_step)  # stable: ties in order of arrival
        candidates = [Candidate((job, i), job.sequences[i]) for job in jobs for i in job.pending[: layout.PER_JOB]]
        # a row is kept for a filler where one may be needed (rows_needed)
        cap = min(layout.TILED_ROWS, self.n_ubatch - 1) if self.invariant else self.n_ubatch - 1
        seats = layout.pack(candidates, self.max_sequences, self.invariant, cap)
        taken: dict[EmbedJob, set[int]] = {}
        for c, _ in seats:
            job, i = c.key
            taken.setdefault(job, set()).add(i)
        for job, indices in taken.items():
            job.pending = [i for i in job.pending if i not in indices]
            job.last_step = self._stats.steps
        return [(c.key, start, list(c.tokens)) for c, start in seats]

    def _drop_ended(self) -> None:
        """Forget jobs that ended, or have every input placed; fail those cancelled or past their deadline."""
        for job in list(self._jobs):
            if job.finished or not job.pending:
                self._jobs.remove(job)
            elif (why := job.interrupt()) is not None:
                job.fail(why)
                self._jobs.remove(job)

    def _write(self, placed: list[tuple[tuple[EmbedJob, int], int, list[int]]]) -> int:
        """The batch's rows: each sequence at its place, filler rows (one sequence of their own)
        in the gaps and where one is needed (see the module docstring); returns the row count."""
        used = np.zeros(self.n_ubatch, dtype=bool)
        for seq_id, (_, start, tokens) in enumerate(placed):
            self._rows(start, tokens, seq_id)
            used[start : start + len(tokens)] = True
        spans = [(start, len(tokens)) for _, start, tokens in placed]
        n = layout.rows_needed(spans, self.rank or sum(len(t) for _, _, t in placed) == 1)
        free = np.flatnonzero(~used[:n])
        self._tok[free] = self._filler
        self._pos[free] = np.arange(len(free), dtype=np.int32)
        for i in free:
            self._seq_ids[i][0] = len(placed)
        self._batch.batch.n_tokens = n
        return n

    def _rows(self, start: int, tokens: list[int], seq_id: int) -> None:
        end = start + len(tokens)
        self._tok[start:end] = tokens
        self._pos[start:end] = np.arange(len(tokens), dtype=np.int32)
        for i in range(start, end):
            self._seq_ids[i][0] = seq_id

    def _deliver(self, placed: list[tuple[tuple[EmbedJob, int], int, list[int]]], n: int) -> None:
        if self.rank:
            for seq_id, ((job, i), _, _) in enumerate(placed):
                ptr = lc.llama_get_embeddings_seq(self._c, seq_id)
                job.put(i, np.ctypeslib.as_array(ptr, shape=(self.n_cls_out,)).copy())
            return
        ptr = lc.llama_get_embeddings(self._c)
        out = np.ctypeslib.as_array(ptr, shape=(n, self.n_embd))
        for (job, i), start, tokens in placed:
            job.put(i, pool(out[start : start + len(tokens)], self.cfg.pooling))

    def close(self) -> None:
        self.fail_all(GenerationFailed())
        self._batch.close()
        self._ctx.close()
        if self._owns_model:
            self._model.close()


def pool(rows: np.ndarray, pooling: str) -> np.ndarray:
    """One sequence's token vectors -> its vector, the same way whatever its batch ("none": all of them)."""
    if pooling == "mean":
        return np.asarray(rows.mean(axis=0, dtype=np.float64), dtype=np.float32)
    picked = rows[0] if pooling == "cls" else rows[-1] if pooling == "last" else rows
    return np.array(picked, dtype=np.float32)  # a copy: llama.cpp reuses its buffer
