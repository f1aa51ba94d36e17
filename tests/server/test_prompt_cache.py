"""The RAM prompt cache (server/engine/promptcache.py) on real models: tiny Llama and Gemma 3 270M.

One slot makes every new prompt take the slot from the previous one, so what the
slot gave up can only come back from RAM.
"""

from __future__ import annotations

import pytest

from server.engine.batching import BatchDecoder, SamplingParams
from server.engine.promptcache import common_prefix
from tests.server.test_batching import GREEDY, Recorder

SYSTEM = "You are a helpful assistant. Answer briefly, truthfully and kindly. " * 3
A = SYSTEM + "Question: why is the sea salty?"
B = "Once upon a time, in a land far away, there lived a dragon."
C = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


@pytest.fixture(params=["tiny_llama", "gemma"])
def one_slot(request):
    def make(**kw):
        settings = dict(n_parallel=1, n_ctx_per_seq=256, n_batch=128, n_threads=2, **kw)
        decoder = BatchDecoder.load(request.getfixturevalue(f"{request.param}_gguf"), **settings)
        made.append(decoder)
        return decoder

    made: list[BatchDecoder] = []
    yield make
    for decoder in made:
        decoder.close()


def ask(decoder: BatchDecoder, text: str) -> Recorder:
    rec = Recorder()
    decoder.add(decoder.tokenize(text), SamplingParams(max_tokens=8, **GREEDY), rec)
    decoder.run_until_idle()
    return rec


def shared(decoder: BatchDecoder, a: str, b: str) -> int:
    """Tokens two prompts share anyway (BOS and whatever else they begin with)."""
    return common_prefix(decoder.tokenize(a), decoder.tokenize(b))


def test_a_prompt_the_slot_gave_up_comes_back_from_ram(one_slot):
    decoder = one_slot()
    first = ask(decoder, A)
    ask(decoder, B)  # takes the slot: A's state goes to RAM
    assert decoder.stats().prompt_cache_prompts == 1
    again = ask(decoder, A)  # B goes to RAM, A's state comes back
    stats = decoder.stats()
    assert again.finished.usage.cached_tokens == len(decoder.tokenize(A)) - 1
    assert again.text == first.text
    assert (stats.prompt_cache_hits, stats.prompt_cache_prompts) == (1, 1) and stats.prompt_cache_bytes > 0


def test_without_the_ram_cache_the_prompt_is_recomputed(one_slot):
    decoder = one_slot(cache_ram_mib=0)
    first = ask(decoder, A)
    ask(decoder, B)
    again = ask(decoder, A)
    assert again.finished.usage.cached_tokens == shared(decoder, A, B)
    assert again.text == first.text
    assert decoder.stats().prompt_cache_prompts == 0


def test_a_full_cache_drops_its_oldest_prompt(one_slot):
    decoder = one_slot()
    ask(decoder, A)
    ask(decoder, B)
    # Room for A's state (the longest prompt) and nothing beside it.
    decoder._table.ram.limit = decoder.stats().prompt_cache_bytes
    ask(decoder, C)  # B goes in, so A, the oldest, goes out
    assert decoder.stats().prompt_cache_prompts == 1
    assert ask(decoder, A).finished.usage.cached_tokens == shared(decoder, A, C)


def test_clear_cache_empties_ram_too(one_slot):
    decoder = one_slot()
    ask(decoder, A)
    ask(decoder, B)
    decoder.clear_cache()
    stats = decoder.stats()
    assert (stats.prompt_cache_prompts, stats.prompt_cache_bytes, stats.kv_cells_used) == (0, 0, 0)


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("RssAnon:"))


def test_dropped_states_go_back_to_the_system_whatever_else_is_held():
    """The cache drops its oldest states while newer ones stay: the memory of the dropped ones
    must leave the process. (From malloc it stayed, in holes between the states still held.)"""
    import gc

    from server.engine.promptcache import state_buffer

    state_buffer(30 << 20)[::4096] = 1  # as a long-lived cache does: a large state made and dropped first
    states = [state_buffer(8 << 20) for _ in range(16)]
    for s in states:
        s[::4096] = 1  # llama.cpp writes every page
    before = _rss_anon()
    del states[::2]  # drop every other one: 64 MiB between states still held
    gc.collect()
    assert before - _rss_anon() > 48 << 20
