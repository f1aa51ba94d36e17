"""Moderation end to end: real gunicorn, Gemma 3 270M answering and SmolLM2 loaded from the library as
the guard model, asked through the official openai client.

SmolLM2 is no Llama Guard, so its verdicts mean nothing; but the prompt it reads, the grammar that
holds its answer, the score from its log-probabilities and the windows are the real ones. With
GUARD_THRESHOLD=0 every check flags, which makes each path's outcome certain.
"""

from __future__ import annotations

import re

import openai
import pytest
import requests

from server.http.app import build_library
from server.model.files import SMOLLM2_FILE
from server.safety.guard import LlamaGuard, _tokens
from server.safety.prompt import Turn, render
from server.settings import Settings
from tests.server.conftest import metric
from tests.server.gunicorn_util import run_gunicorn

GUARD = SMOLLM2_FILE.removesuffix(".gguf")
ANSWER = re.compile(r"\n{0,2}(safe|unsafe\n(S[1-9]|S1[0-4])(,(S[1-9]|S1[0-4]))*)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(gemma_gguf, smollm2_gguf, tmp_path_factory):
    with run_gunicorn(
        gemma_gguf,
        tmp_path_factory.mktemp("safety-gunicorn"),
        LLAMA_SERVER_N_CTX="1024",
        LLAMA_SERVER_MODERATION="both",
        LLAMA_SERVER_GUARD_MODEL=GUARD,
        LLAMA_SERVER_GUARD_THRESHOLD="0",
        LLAMA_SERVER_MODERATION_WINDOW="4",
        LLAMA_SERVER_MODERATION_OVERLAP="2",
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_moderations_in_openais_shape(client):
    result = client.moderations.create(input=["How do I bake bread?", "Hello there"])
    assert len(result.results) == 2 and result.model == GUARD
    first = result.results[0]
    assert first.flagged is True  # GUARD_THRESHOLD=0
    assert set(first.categories.model_dump(by_alias=True)) >= {"violence", "self-harm", "sexual/minors"}
    extra = first.model_extra or {}
    assert 0.0 <= extra["llama_guard_score"] <= 1.0 and isinstance(extra["llama_guard_categories"], list)
    assert len(client.moderations.create(input="one").results) == 1


def test_a_request_is_refused_with_content_filter(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gemma-3-270m-q4_k_m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
    assert caught.value.code == "content_filter"


def test_an_answer_is_withheld_streamed_or_not(client):
    narrowed = {"X-Moderation": "output"}
    asked = dict(model="gemma-3-270m-q4_k_m", messages=[{"role": "user", "content": "Count."}], max_tokens=8)
    whole = client.chat.completions.create(**asked, extra_headers=narrowed)
    assert whole.choices[0].finish_reason == "content_filter" and whole.choices[0].message.content == ""
    chunks = list(client.chat.completions.create(**asked, stream=True, extra_headers=narrowed))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""  # strict


def test_the_guards_work_is_measured(base, client):
    client.moderations.create(input="x")
    text = requests.get(base + "/metrics", timeout=30).text
    for direction in ("input", "output", "api"):
        assert metric(text, "llama_server_moderation_guard_seconds_count", f'direction="{direction}"') >= 1
    assert metric(text, "llama_server_moderation_guard_failures_total") == 0
    assert metric(text, "llama_server_moderation_flags_total", 'direction="api"') >= 1


def test_smollm2_as_guard_answers_in_the_grammar_with_a_real_score(smollm2_gguf):
    settings = Settings(n_ctx=1024, parallel=1, guard_model=GUARD, guard_threshold=0.5)
    library = build_library(settings)
    try:
        guard = LlamaGuard(settings, library)
        assert guard.format.name == "llama-guard-3"  # nothing in SmolLM2's name says otherwise
        for turns in ([Turn("User", "How do I bake bread?")], [Turn("User", "Hi"), Turn("Agent", "Hello <|im_end|>")]):
            verdict = guard.check(turns)
            assert ANSWER.fullmatch(verdict.said), verdict.said
            assert 0.0 <= verdict.score <= 1.0 and verdict.flagged == (verdict.score >= 0.5)
        # A message that types the model's own control token gets the characters, not the token.
        with library.use(GUARD) as lease:
            vocab = lease.engine.vocab
            im_end = vocab.tokenize("<|im_end|>", True)
            assert len(im_end) == 1
            pieces = render(guard.format, [Turn("User", "a <|im_end|> b")])
            assert im_end[0] not in _tokens(vocab, pieces)
    finally:
        library.close()


def test_a_text_too_long_for_the_guard_is_read_in_overlapping_parts(smollm2_gguf, monkeypatch):
    """Never cut unread: every part fits the guard's context, and together the parts hold every word."""
    from server.engine.engine import Engine

    seen: list[str] = []
    submit = Engine.submit_tokens

    def spy(self, tokens, request, on_done=None):
        generation = submit(self, tokens, request, on_done)  # raises PromptTooLong for a part too long
        seen.append(request.prompt)
        return generation

    monkeypatch.setattr(Engine, "submit_tokens", spy)
    settings = Settings(n_ctx=768, parallel=1, guard_model=GUARD, guard_threshold=0.0)
    library = build_library(settings)
    words = [f"w{i}" for i in range(250)]
    try:
        verdict = LlamaGuard(settings, library).check([Turn("User", "question"), Turn("Agent", " ".join(words))])
    finally:
        library.close()
    assert verdict.flagged and len(seen) >= 2
    assert all("User: \n\nAgent: " in prompt for prompt in seen)  # the question went first, to make room
    read = set(" ".join(prompt.split("Agent: ")[1].split("\n\n<END CONVERSATION>")[0] for prompt in seen).split())
    assert read >= set(words)


class _SlowAfterLabel:
    """An engine that writes the guard's label at once and the rest only after `rest_s` seconds:
    what a real one does while it computes the forced remainder, made long enough to see."""

    def __init__(self, label: list[str], rest_s: float) -> None:
        self.label, self.rest_s, self.vocab = label, rest_s, None

    def submit_tokens(self, tokens, request):
        import time as _time

        from server.engine.logprobs import TokenLogprob
        from server.engine.request import Delta, Done

        def events():
            first, *rest = self.label
            top = ((1, b"unsafe", -0.1), (2, b"safe", -2.5)) if first.startswith("u") else ((2, b"safe", -0.1),)
            yield Delta(first, (TokenLogprob(1 if first.startswith("u") else 2, first.encode(), -0.1, top),))
            _time.sleep(self.rest_s)
            for text in rest:
                yield Delta(text)
            yield Done("stop", {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, {})

        return _Iter(events())


class _Iter:
    """A generator with Generation's live() (these events come as they are made anyway)."""

    def __init__(self, events) -> None:
        self._events = events

    def live(self) -> None:
        pass

    def __iter__(self):
        return self._events


class _OneEngineLibrary:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.catalog = self

    def find(self, name):
        raise ValueError("no file: the format is set")

    def use(self, model, timeout=None):
        import contextlib
        import types

        return contextlib.nullcontext(types.SimpleNamespace(engine=self.engine))


@pytest.mark.parametrize("label, flagged", [(["safe"], False), (["s", "afe"], False), (["unsafe", "\nS1"], True)])
def test_a_safe_verdict_returns_at_the_labels_first_token(monkeypatch, label, flagged):
    """The two answers differ from their first letter: "s..." is safe, and the check does not wait
    for the rest the grammar forces; "unsafe" reads on, for its categories."""
    import time

    import server.safety.guard as guard_module

    monkeypatch.setattr(guard_module, "_tokens", lambda vocab, pieces: [1, 2, 3])
    settings = Settings(guard_model="g", guard_format="llama-guard-3", guard_threshold=0.5)
    guard = LlamaGuard(settings, _OneEngineLibrary(_SlowAfterLabel(label, rest_s=3.0)))
    started = time.monotonic()
    verdict = guard.check([Turn("User", "How do I bake bread?")])
    took = time.monotonic() - started
    assert verdict.flagged == flagged
    if flagged:
        assert verdict.categories == ("S1",) and took >= 3.0
    else:
        assert verdict.said == "safe" and took < 1.5


class _HeldUntilLate:
    """An engine that hands back a real, unstreamed Generation: the label goes in at once, the
    end only after `rest_s` seconds (a real engine's next step, made long enough to see)."""

    def __init__(self, rest_s: float) -> None:
        self.rest_s, self.vocab = rest_s, None

    def submit_tokens(self, tokens, request):
        import threading
        import time as _time

        from server.engine.generation import Generation, GenerationRequest
        from server.engine.logprobs import TokenLogprob
        from server.engine.request import Delta, Done

        generation = Generation(GenerationRequest((1,), request.sampling, False, _time.monotonic() + 60), None)
        generation.put(Delta("safe", (TokenLogprob(2, b"safe", -0.1, ((2, b"safe", -0.1),)),)))
        done = Done("stop", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, {})
        threading.Timer(self.rest_s, generation.finish, args=(done,)).start()
        return generation


def test_the_guard_reads_its_unstreamed_answer_as_it_comes(monkeypatch):
    """An unstreamed Generation holds its deltas until the end unless its reader asks for them
    live: the guard does, so its safe label is read before the answer ends."""
    import time

    import server.safety.guard as guard_module

    monkeypatch.setattr(guard_module, "_tokens", lambda vocab, pieces: [1, 2, 3])
    settings = Settings(guard_model="g", guard_format="llama-guard-3", guard_threshold=0.5)
    guard = LlamaGuard(settings, _OneEngineLibrary(_HeldUntilLate(rest_s=3.0)))
    started = time.monotonic()
    verdict = guard.check([Turn("User", "How do I bake bread?")])
    assert not verdict.flagged and verdict.said == "safe"
    assert time.monotonic() - started < 1.5
