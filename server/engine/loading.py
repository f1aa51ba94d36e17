"""Loading what the engine serves: the slot and offload plan, the decoder, the prompt format.

Runs once, on the engine's worker thread, before the first request. The plan
(server/model/parallel.py) decides PARALLEL and the GPU layers; the decoder holds the
only copy of the weights, and the vocabulary facts prompt building needs come
from it; server/model/describe.py turns it all into what /api/health and the start-up
log say.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from server.engine import invariance
from server.engine.batching import BatchDecoder
from server.engine.embedding.embedder import Embedder
from server.engine.embedding.model import chat_embedder, check_rank_head, file_pooling, open_embedding_model
from server.engine.llamalog import buffer_sizes, captured_errors, one_line
from server.engine.protocol import Decoder
from server.model import describe
from server.model.files import ModelChoice
from server.model.parallel import ParallelPlan, available_ram, plan_parallel
from server.model.prompt import PromptFormat, Vocab, choose_format
from server.settings import Settings


class LoadError(RuntimeError):
    """The model file could not be loaded; the message says why, on one line."""


@dataclass(frozen=True)
class Loaded:
    decoder: Decoder
    vocab: Vocab
    prompt_format: PromptFormat
    info: dict[str, Any]  # what /api/health says about the model
    embedder: Embedder | None = None  # None: the model does not embed (a chat model without POOLING)


# What the engine calls, on its worker, to get what it serves: `load` below, or a test's own
# (settings, model, the decoder given to the engine or None) -> Loaded.
Loader = Callable[[Settings, ModelChoice, "BatchDecoder | None"], Loaded]


def load(settings: Settings, model: ModelChoice, decoder: BatchDecoder | None = None) -> Loaded:
    """Plan and load `model` (a ModelChoice), or describe the already loaded `decoder`.
    LoadError when the file cannot be loaded, with llama.cpp's reason."""
    pooling = file_pooling(model.path) if decoder is None else None
    try:
        check_rank_head(model.path, settings.pooling or pooling or "")
    except ValueError as exc:
        raise LoadError(str(exc)) from None
    if pooling is not None:  # a model that only embeds (server/engine/embedding/model.py)
        return _load_embedding_model(settings, model, settings.pooling or pooling)
    try:
        plan = plan_parallel(settings, model.path)
    except ValueError as exc:  # a header without what the plans need: say which
        raise LoadError(str(exc)) from exc
    sizes: list[str] = []  # llama.cpp's own report of its buffers: what the model measurably takes
    if decoder is None:
        with captured_errors(sizes) as said:
            try:
                decoder = BatchDecoder.load(model.path, **decoder_settings(settings, plan))
            except Exception as exc:
                raise LoadError(one_line(said) or " ".join(str(exc).split())) from exc
    else:
        plan = replace(plan, n_parallel=decoder.cfg.n_parallel, mode="given", reason="a decoder loaded by the caller")
    metadata = decoder.metadata()
    template, prompt_format = describe.chat_template(settings, metadata)
    info = {
        **describe.model_info(model, metadata, decoder.n_ctx, plan, prompt_format),
        "prompt_cache_mib": decoder.cfg.cache_ram_mib,
        "memory": buffer_sizes(sizes),
    }
    describe.announce(info, model)
    embedder = None
    if isinstance(decoder, BatchDecoder):
        embedder = chat_embedder(settings, decoder._model, decoder.n_ctx, invariance.applies(decoder.cfg))
    if embedder is not None:
        info["embedding"] = embedding_info(embedder)
    return Loaded(decoder, vocab_of(decoder), choose_format(template), info, embedder)


def _load_embedding_model(settings: Settings, model: ModelChoice, pooling: str) -> Loaded:
    sizes: list[str] = []
    with captured_errors(sizes) as said:
        try:
            decoder = open_embedding_model(settings, model, pooling)
        except Exception as exc:
            raise LoadError(one_line(said) or " ".join(str(exc).split())) from exc
    metadata = decoder.metadata()
    info = {
        "model": metadata.get("general.name") or model.path.stem,
        "file": str(model.path),
        "architecture": metadata.get("general.architecture", "unknown"),
        "quantization": describe.quantization(metadata),
        "n_ctx": decoder.n_ctx,
        "embedding": embedding_info(decoder.embedder),
        "memory": buffer_sizes(sizes),
    }
    describe.log.info(
        "model %s (%s, %s) from %s: embeddings only, %s",
        info["model"],
        info["architecture"],
        info["quantization"],
        info["file"],
        info["embedding"],
    )
    return Loaded(decoder, vocab_of(decoder), choose_format(None), info, decoder.embedder)  # type: ignore[arg-type]


def embedding_info(embedder: Embedder) -> dict[str, Any]:
    """What /api/health says of embeddings, and what the dialects check requests against."""
    return {"pooling": embedder.cfg.pooling, "n_embd": embedder.n_embd, "max_tokens": embedder.cfg.limit}


def decoder_settings(settings: Settings, plan: ParallelPlan) -> dict[str, Any]:
    """BatchDecoder.load arguments from the server settings and the slot/offload plan."""
    return dict(
        n_parallel=plan.n_parallel,
        n_ctx_per_seq=settings.n_ctx,
        n_batch=max(settings.n_batch, plan.n_parallel),
        prefill_chunk=settings.prefill_chunk,
        n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads,
        n_gpu_layers=plan.offload.n_gpu_layers,
        main_gpu=settings.main_gpu,
        tensor_split=settings.tensor_split,
        use_mlock=settings.use_mlock,
        flash_attn=settings.flash_attn,
        type_k=settings.kv_cache_type,
        type_v=settings.kv_cache_type,
        prefix_cache=settings.prefix_cache,
        batch_invariant=settings.batch_invariant,
        cache_ram_mib=cache_ram_mib(settings, plan),
        speculative=settings.speculative,
        draft_max=settings.draft_max,
        draft_model=settings.draft_model,
        draft_n_gpu_layers=settings.draft_n_gpu_layers,
    )


# CACHE_RAM=auto while any of the KV cache is in RAM: the smaller of 2 GiB and a tenth of the
# RAM available at start, so the cache never crowds out the model or the rest of the machine.
# With every layer on the GPU, a prompt is recomputed faster than its state crosses PCIe twice:
# on an H100, 8 clients got 600 tokens/s with the RAM cache and 817 without
# (bench/results/gpu-concurrency-cache-ram-*.json), so auto turns it off there.
AUTO_CACHE_RAM_MIB = 2048
AUTO_CACHE_RAM_SHARE = 0.1


def cache_ram_mib(settings: Settings, plan: ParallelPlan, ram_bytes: int | None = -1) -> int:
    """MiB for the RAM prompt cache; `ram_bytes`: what is available (-1 reads it)."""
    if isinstance(settings.cache_ram, int):  # else "auto"
        return settings.cache_ram
    offload = plan.offload
    if offload.n_gpu_layers >= offload.total_layers:
        return 0
    ram = available_ram() if ram_bytes == -1 else ram_bytes
    if ram is None:  # unknown: the fixed cap
        return AUTO_CACHE_RAM_MIB
    return min(AUTO_CACHE_RAM_MIB, int(ram * AUTO_CACHE_RAM_SHARE) >> 20)


def vocab_of(decoder: BatchDecoder) -> Vocab:
    bos, eos = decoder.token_bos, decoder.token_eos

    def tokenize(text: str, special: bool) -> list[int]:
        # Tokenizing only reads the vocabulary: safe from HTTP threads while the worker decodes.
        return decoder.tokenize(text, add_bos=False, special=special)

    return Vocab(
        tokenize,
        bos,
        eos,
        decoder.token_text(bos),
        decoder.token_text(eos),
        add_bos=decoder.add_bos and bos >= 0,
        token_attr=decoder.token_attr,
        token_text=decoder.token_text,
    )
