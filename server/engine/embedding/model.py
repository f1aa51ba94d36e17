"""Which models embed, and loading one that only embeds.

An embedding model (BERT and its kin: its GGUF has `<arch>.pooling_type`) is served with
its pooling, or the POOLING setting's; it has no KV cache and generates nothing, so it
gets no batch decoder, only an Embedder (server/engine/embedding/embedder.py) and `EmbeddingOnly`,
the Decoder the engine drives for everything else: the vocabulary (/tokenize), and no
slots, so every generation request is refused. A chat model embeds only when POOLING
names a pooling; its Embedder shares the generating decoder's weights.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import llama_cpp.llama_cpp as lc
from llama_cpp import _internals

from server.engine import invariance
from server.engine.constraints.vocab_index import VocabIndex
from server.engine.decoder_types import DecoderConfig, DecoderStats, Event
from server.engine.embedding.embedder import Embedder, EmbedderConfig
from server.engine.embedding.jobs import POOLING_NAMES
from server.engine.model_facts import ModelFacts
from server.engine.request import SamplingParams
from server.model.files import ModelChoice
from server.model.ggufinfo import read_gguf_info
from server.model.offload import gpu_devices
from server.settings import Settings


def file_pooling(path: Any) -> str | None:
    """The pooling a GGUF file names (an embedding model), else None (a model that generates)."""
    metadata = read_gguf_info(path).metadata
    value = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type")
    return POOLING_NAMES.get(value) if isinstance(value, int) else None


def check_rank_head(path: Any, pooling: str) -> None:
    """Pooling "rank" reads a classification head (`cls`, `cls.output`); without one llama.cpp would
    score with whatever the [CLS] vector holds, so such a file is refused at load."""
    if pooling == "rank" and not any(n.startswith("cls.") for n in read_gguf_info(path).tensor_bytes):
        raise ValueError("POOLING=rank needs a reranker: the model file has no classification head (cls tensors)")


def chat_embedder(settings: Settings, model: _internals.LlamaModel, n_ctx: int, invariant: bool) -> Embedder | None:
    """The Embedder of a generating model: only when POOLING names one. Its sequences are as long as
    a prompt batch (N_BATCH) at most, within the request context: llama-server's limit too.
    `invariant`: whether the generating decoder got batch-invariant kernels (the same CPU, the same weights)."""
    if settings.pooling is None:
        return None
    limit = min(settings.n_batch, n_ctx, model.n_ctx_train())
    return Embedder(model, EmbedderConfig(settings.pooling, limit, settings.n_threads, invariant))


def open_embedding_model(settings: Settings, model: ModelChoice, pooling: str) -> "EmbeddingOnly":
    """Load the weights and the Embedder of a model that only embeds: sequences up to its
    training context (llama-server sizes an encoder's batch the same way)."""
    # auto: every layer on a GPU when there is one (embedding models are small), else none
    gpu_layers = settings.n_gpu_layers if isinstance(settings.n_gpu_layers, int) else -1 if gpu_devices() else 0
    cfg = DecoderConfig(
        n_parallel=1,
        n_ctx_per_seq=8,
        n_threads=settings.n_threads,
        n_gpu_layers=gpu_layers,
        batch_invariant=settings.batch_invariant,
    )
    invariance.prepare(cfg)  # the CPU kernels the generating decoder would get (server/engine/invariance.py)
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers, mparams.main_gpu, mparams.use_mlock = gpu_layers, settings.main_gpu, settings.use_mlock
    if invariance.applies(cfg):
        invariance.model_params(mparams)
    weights = _internals.LlamaModel(path_model=str(model.path), params=mparams, verbose=False)
    try:
        config = EmbedderConfig(pooling, weights.n_ctx_train(), settings.n_threads, invariance.applies(cfg))
        embedder = Embedder(weights, config, True)
    except Exception:
        weights.close()
        raise
    return EmbeddingOnly(weights, embedder, cfg)


class EmbeddingOnly(ModelFacts):
    """The engine's Decoder for a model that only embeds: its vocabulary, and no slots."""

    def __init__(self, model: _internals.LlamaModel, embedder: Embedder, cfg: DecoderConfig) -> None:
        self._model, self._vocab, self.embedder = model, model.vocab, embedder
        self._n_vocab = model.n_vocab()
        self.cfg = cfg
        self._index: VocabIndex | None = None
        self._index_lock = threading.Lock()

    n_ctx = property(lambda self: self.embedder.cfg.limit, doc="the most tokens of one input")
    n_slots = property(lambda self: 0, doc="no generation")

    def add(self, prompt: list[int], params: SamplingParams, on_event: Callable[[Event], None]) -> None:
        raise RuntimeError("this model only embeds")  # the engine refuses generation before this

    def cancel(self, seq: Any) -> None:
        pass

    def step(self) -> int:
        return 0

    def stats(self) -> DecoderStats:
        return self.embedder.stats()  # /metrics: its batches in place of decode steps

    def close(self) -> None:
        self.embedder.close()  # it owns the weights
