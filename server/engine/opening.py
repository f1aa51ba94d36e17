"""Opening a model for the batched decoder: the weights, the shared context, and the draft source.

Kept apart from the decode loop (server/engine/batching.py): what happens once, at start,
and the order it must happen in (ggml's kernel settings before the first context,
server/engine/invariance.py; a context too small for the slots is refused before it is used).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp.llama_cpp as lc
from llama_cpp import _internals, _logger

from server.engine import invariance
from server.engine.decoder_types import DecodeError, DecoderConfig, context_params
from server.engine.speculation.draft_model import DraftModel
from server.engine.speculation.drafts import DraftSource, NgramDraft
from server.engine.speculation.speculator import Speculator

invariance.configure_process()  # before any context exists: ggml reads it once
log = logging.getLogger(__name__)

Opened = tuple[_internals.LlamaModel, _internals.LlamaContext, DecoderConfig, "Speculator | None"]


def open_model(model_path: str | Path, cfg: DecoderConfig) -> Opened:
    """Load the weights once and create the shared context; what BatchDecoder is built from."""
    _logger.set_verbose(cfg.verbose)
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers, mparams.main_gpu, mparams.use_mlock = cfg.n_gpu_layers, cfg.main_gpu, cfg.use_mlock
    if cfg.tensor_split:
        # Read during loading only; the array must live until then.
        split = (ctypes.c_float * lc.LLAMA_MAX_DEVICES)(*cfg.tensor_split)
        mparams.tensor_split = split
    invariance.prepare(cfg)
    if invariance.applies(cfg):
        invariance.model_params(mparams)
    elif cfg.batch_invariant and cfg.n_gpu_layers == 0:
        log.warning("batch-invariant decoding is off: %s", invariance.unavailable(cfg))
    model = _internals.LlamaModel(path_model=str(model_path), params=mparams, verbose=cfg.verbose)
    ctx = _internals.LlamaContext(model=model, params=context_params(cfg), verbose=cfg.verbose)
    per_seq = lc.llama_n_ctx_seq(ctx.ctx)
    if per_seq < cfg.n_ctx_per_seq:
        ctx.close()
        model.close()
        raise DecodeError(
            f"the KV cache gives each of {cfg.n_parallel} slots {per_seq} tokens, "
            f"fewer than n_ctx_per_seq={cfg.n_ctx_per_seq}: lower one of them"
        )
    try:
        speculator = make_speculator(cfg, model)
    except Exception:
        ctx.close()
        model.close()
        raise
    return model, ctx, cfg, speculator


def make_speculator(cfg: DecoderConfig, model: _internals.LlamaModel) -> Speculator | None:
    """The draft source the settings ask for (a draft model is loaded here, once)."""
    if cfg.speculative == "off":
        return None
    source: DraftSource
    if cfg.speculative == "ngram" or cfg.draft_model is None:
        source = NgramDraft()
    else:
        target = (model.n_vocab(), model.token_bos(), model.token_eos())
        source = DraftModel(
            cfg.draft_model, cfg.n_parallel, cfg.n_ctx_per_seq, cfg.draft_n_gpu_layers, cfg.n_threads, target
        )
    return Speculator(source, cfg.draft_max, min(cfg.draft_step_tokens, cfg.n_batch))
