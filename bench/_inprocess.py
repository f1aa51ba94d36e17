"""The concurrency benchmark's in-process column (decoder-pN): the batching decoder with no HTTP.

Also the one helper the reference columns need from llama.cpp directly: the model's end-of-generation
tokens, which llama-cpp-python's server can only be kept from through a logit bias.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def end_tokens(model: Path) -> list[int]:
    """Every token llama.cpp treats as end of generation (EOS, EOT, ...) in `model`'s vocabulary."""
    import llama_cpp.llama_cpp as lc
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), vocab_only=True, verbose=False)
    try:
        vocab = lc.llama_model_get_vocab(llm._model.model)
        return [t for t in range(lc.llama_vocab_n_tokens(vocab)) if lc.llama_vocab_is_eog(vocab, t)]
    finally:
        llm.close()


class InProcess:
    """The batching decoder driven directly by one stepping thread, no HTTP: what the
    engine can reach at best. Prompts are built as our server builds them (its chat
    format and vocabulary code); clients block on their sequence's Ended event."""

    def __init__(
        self, model: Path, slots: int, threads: int, ctx: int, n_gpu_layers: int = 0, flash_attn: str = "auto"
    ) -> None:
        sys.path.insert(0, str(ROOT))
        from server.engine.batching import BatchDecoder, SamplingParams
        from server.engine.loading import vocab_of
        from server.model.describe import chat_template
        from server.model.prompt import choose_format
        from server.settings import Settings

        self.decoder = BatchDecoder.load(
            model,
            n_parallel=slots,
            n_ctx_per_seq=ctx,
            n_threads=threads,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
        )
        self.vocab = vocab_of(self.decoder)
        self.format = choose_format(chat_template(Settings(), self.decoder.metadata())[0])
        # Whether the decoder's sampling parameters can ignore end of sequence (as the server's
        # `ignore_eos` body field does): without it this column may stop early, and says so.
        self.ignores_eos = "ignore_eos" in {f.name for f in dataclasses.fields(SamplingParams)}
        self.lock, self.stop = threading.Condition(), False
        self.driver = threading.Thread(target=self._drive, daemon=True)
        self.driver.start()

    def _drive(self) -> None:
        while not self.stop:
            with self.lock:  # sleep while idle; ask() adds under the lock, so no wake-up is missed
                while self.decoder.idle and not self.stop:
                    self.lock.wait()
            self.decoder.step()

    def ask(self, body: dict) -> dict:
        from server.engine.batching import Ended, SamplingParams
        from server.model.prompt import Message

        tokens = self.format.tokens([Message(m["role"], m["content"]) for m in body["messages"]], self.vocab)
        done = threading.Event()
        result = {}

        def on_event(ev) -> None:
            if isinstance(ev, Ended):
                result["usage"] = {"completion_tokens": ev.usage.completion_tokens}
                done.set()

        extra = {"ignore_eos": True} if body.get("ignore_eos") and self.ignores_eos else {}
        params = SamplingParams(
            temperature=0, repeat_penalty=body["repeat_penalty"], max_tokens=body["max_tokens"], **extra
        )
        with self.lock:
            self.decoder.add(tokens, params, on_event)
            self.lock.notify()
        done.wait()
        return result

    def close(self) -> None:
        with self.lock:
            self.stop = True
            self.lock.notify()
        self.driver.join()
        self.decoder.close()
