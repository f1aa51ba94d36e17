"""The generation core: one llama.cpp context driven through llama-cpp-python.

This is the only module that runs tokens through the model. The engine calls
`LlamaDecoder.run(request, emit, interrupt)` from its single worker thread and
knows nothing else about how tokens are produced, so a batching decoder can
take its place by offering the same three methods (`run`, `vocab`, `n_ctx`).

Generation goes through `Llama.create_completion(stream=True)`, which already
holds back text that may be the start of a stop string and never splits a UTF-8
character; a stopping criterion called once per sampled token gives us the
token count, our own timings, and the point where a cancel or a deadline stops
the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import llama_cpp
from llama_cpp import Llama, StoppingCriteriaList

from server.prompt import Vocab


@dataclass(frozen=True)
class DecodeResult:
    finish_reason: str        # "stop" | "length" | the interrupt's reason
    completion_tokens: int    # sampled tokens, end-of-generation token excluded
    prompt_ms: float          # start -> first token sampled (prompt evaluation)
    generation_ms: float      # first token -> end
    tokens_per_second: float  # decode rate between the first and the last token


class _Llama(Llama):
    """Llama that remembers the token it sampled last, and how many, for the stopping criterion."""
    last_sampled: int = -1
    samples: int = 0

    def sample(self, *args, **kwargs):
        self.last_sampled = super().sample(*args, **kwargs)
        self.samples += 1
        return self.last_sampled


class LlamaDecoder:
    def __init__(self, model_path: Path, settings, n_gpu_layers: int):
        self.llama = _Llama(
            model_path=str(model_path), n_ctx=settings.n_ctx, n_threads=settings.n_threads,
            n_threads_batch=settings.n_threads, n_batch=settings.n_batch, n_gpu_layers=n_gpu_layers,
            main_gpu=settings.main_gpu, tensor_split=list(settings.tensor_split) if settings.tensor_split else None,
            flash_attn=settings.flash_attn, use_mlock=settings.use_mlock,
            type_k=settings.kv_cache_ggml_type, type_v=settings.kv_cache_ggml_type, verbose=False)

    @property
    def n_ctx(self) -> int:
        return self.llama.n_ctx()

    @property
    def metadata(self) -> dict[str, str]:
        return self.llama.metadata

    def vocab(self) -> Vocab:
        model = self.llama._model

        def tokenize(text: str, special: bool) -> list[int]:
            return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)

        bos, eos = self.llama.token_bos(), self.llama.token_eos()
        return Vocab(tokenize, bos, eos, model.token_get_text(bos), model.token_get_text(eos),
                     add_bos=bool(model.add_bos_token()) and bos >= 0)

    def run(self, request, emit: Callable[[str], None], interrupt: Callable[[], str | None]) -> DecodeResult:
        """Generate for `request`, calling emit(text) per delta; stop early when interrupt() names a reason."""
        llama, vocab = self.llama, self.llama._model.vocab
        marks = {"first": None, "last": None, "count": 0, "reason": None, "seen": llama.samples}

        def each_token(_input_ids, _logits) -> bool:
            if llama.samples == marks["seen"]:
                return False  # create_completion calls once more after its loop: no new token
            marks["seen"] = llama.samples
            now = time.perf_counter()
            marks["reason"] = interrupt()
            if marks["reason"] is not None:
                return True  # this token is dropped, so it is not counted
            marks["first"] = marks["first"] or now
            marks["last"] = now
            if not llama_cpp.llama_vocab_is_eog(vocab, llama.last_sampled):
                marks["count"] += 1
            return False

        s = request.sampling
        start = time.perf_counter()
        finish = "length"
        for chunk in llama.create_completion(
                prompt=list(request.prompt_tokens), max_tokens=request.max_tokens, temperature=s.temperature,
                top_p=s.top_p, top_k=s.top_k, min_p=s.min_p, repeat_penalty=s.repeat_penalty, seed=s.seed,
                stop=list(request.stop), stream=True, stopping_criteria=StoppingCriteriaList([each_token])):
            choice = chunk["choices"][0]
            if choice["text"]:
                emit(choice["text"])
            finish = choice["finish_reason"] or finish
        end = time.perf_counter()
        first, last = marks["first"] or end, marks["last"] or end
        decoded = marks["count"] - 1
        return DecodeResult(marks["reason"] or finish, marks["count"], (first - start) * 1000, (end - first) * 1000,
                            decoded / (last - first) if decoded > 0 and last > first else 0.0)
