"""The engine's embeddings on real models: batched, bit-for-bit independent of the batch, never crashing on size.

Two real models: SmolLM2 (a chat model, POOLING=mean, its KV cache cleared per batch) and
all-MiniLM-L6-v2 (BERT, an encoder that only embeds). A request's vectors are compared
bit for bit alone and packed with others, in one request and across concurrent requests;
lengths at and past the model's limit are cut or refused, never handed to llama.cpp.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from server.engine.embedding.inputs import embed_sequences, rank_sequences
from server.engine.embedding.jobs import EmbedRequest, RankRequest
from server.engine.engine import Engine
from server.engine.request import Request, SamplingParams
from server.errors import InvalidRequest
from server.model.files import ModelChoice
from server.settings import Settings, SettingsError
from tests.server.conftest import EMBED_SETTINGS
from tests.server.embed_models import head_score, head_weights

TEXTS = [
    "The cat sat on the mat.",
    "",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "東京は日本の首都です。",
    "🦙🦙 llamas everywhere 🦙",
    "def add(a, b):\n    return a + b\n",
    "a " * 40,
    "Tokens like [SEP] and <|im_end|> inside a text.",
]


LONG = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)  # a generation that outlasts an embedding


def embed(engine: Engine, texts, **kw) -> list[np.ndarray]:
    return engine.embed(EmbedRequest(tuple(texts), **kw)).wait().vectors


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def alone(engine: Engine, texts) -> list[np.ndarray]:
    return [embed(engine, [t])[0] for t in texts]


@pytest.fixture(params=["smollm_embed_engine", "minilm_engine", "minilm_q8_engine"])
def engine(request) -> Engine:
    return request.getfixturevalue(request.param)


def texts_for(engine: Engine) -> list[str]:
    """SmolLM2 adds no BOS: an empty text has no tokens (refused, tested apart); BERT adds [CLS] [SEP]."""
    adds_specials = bool(engine._embedder.facts.tokenize("", True))
    return [t for t in TEXTS if t or adds_specials]


def test_vectors_are_the_same_bits_alone_and_batched(engine):
    texts = texts_for(engine)
    single = alone(engine, texts)
    steps = engine._embedder.steps
    together = embed(engine, texts)
    assert engine._embedder.steps - steps < len(texts) / 2, "one request's inputs share batches"
    steps = engine._embedder.steps
    assert all(same_bits(a, b) for a, b in zip(embed(engine, texts[:4]), single))
    assert engine._embedder.steps == steps + 1, "four short inputs share one batch"
    reversed_ = embed(engine, texts[::-1])[::-1]
    for i, text in enumerate(texts):
        assert single[i].shape == (engine.info["embedding"]["n_embd"],) and np.all(np.isfinite(single[i]))
        assert same_bits(single[i], together[i]), f"{text!r}: batched with others, its vector changed"
        assert same_bits(single[i], reversed_[i]), f"{text!r}: in another place of the batch, its vector changed"
    # Different texts do get different vectors (the comparison above can fail).
    assert not same_bits(single[0], single[2])
    # One token alone is one row, which the weight products would take another kernel for.
    lone = embed(engine, [(7,)])[0]
    assert same_bits(lone, embed(engine, [texts[0], (7,)])[1])


def test_concurrent_requests_share_batches_and_keep_their_bits(engine):
    texts = texts_for(engine)
    expected = alone(engine, texts)
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(len(texts))

    def client(i: int) -> None:
        start.wait()
        results[i] = [embed(engine, [texts[i], texts[(i + 1) % len(texts)]]) for _ in range(3)]

    steps = engine._embedder.steps
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert engine._embedder.steps - steps < 3 * len(texts), "concurrent requests never shared a batch"
    for i, runs in results.items():
        for got in runs:
            assert same_bits(got[0], expected[i]) and same_bits(got[1], expected[(i + 1) % len(texts)])


def test_inputs_at_and_past_the_limit_are_cut_or_refused(engine):
    limit = engine.info["embedding"]["max_tokens"]
    long_text = "word " * (limit + 50)
    job = engine.embed(EmbedRequest((long_text, long_text[: limit // 2])))
    answer = job.wait()
    assert answer.token_counts[0] == limit and answer.token_counts[1] < limit
    with pytest.raises(InvalidRequest) as info:
        engine.embed(EmbedRequest((long_text,), truncate=False, single=True))
    assert info.value.field == "input" and "tokens, more than the model's context" in info.value.message
    # Token lists: exactly the limit passes; over it is cut; as many full-length inputs as fit several batches.
    full = tuple([5] * limit)
    answer = engine.embed(EmbedRequest((full,) * 5 + (full + (5, 5),))).wait()
    assert answer.token_counts == [limit] * 6
    assert same_bits(answer.vectors[0], answer.vectors[5])


def test_bad_inputs_are_refused_naming_the_field(engine):
    n_vocab = engine._embedder.facts.n_vocab
    cases = {
        "input[1][2]": EmbedRequest(((1, 2), (3, 4, n_vocab))),
        "input[0][0]": EmbedRequest(((-1,),)),
        "input": EmbedRequest(()),
    }
    for field, req in cases.items():
        with pytest.raises(InvalidRequest) as info:
            engine.embed(req)
        assert info.value.field == field
    with pytest.raises(InvalidRequest) as info:
        engine.embed(EmbedRequest(("x",) * (engine.settings.embed_max_inputs + 1)))
    assert info.value.field == "input" and "at most 2048" in info.value.message


def test_the_chat_model_embeds_beside_a_generation(smollm_embed_engine):
    engine = smollm_embed_engine
    expected = alone(engine, TEXTS[:3:2])
    gen = engine.submit(Request(prompt="Once upon a time", stream=True, sampling=LONG))
    first = next(iter(gen))  # generating now
    got = embed(engine, TEXTS[:3:2])
    assert engine.active == 1, "the embedding waited for the generation to end"
    text = first.text + "".join(getattr(e, "text", "") for e in gen)
    assert text and all(same_bits(a, b) for a, b in zip(got, expected))


def test_an_empty_text_without_special_tokens_is_refused(smollm_embed_engine):
    with pytest.raises(InvalidRequest) as info:
        smollm_embed_engine.embed(EmbedRequest(("a", ""), single=False))
    assert info.value.field == "input[1]" and "empty" in info.value.message


def test_a_chat_model_without_pooling_does_not_embed(smollm2_gguf):
    engine = Engine(Settings(**EMBED_SETTINGS), ModelChoice(smollm2_gguf, is_default=True)).start()
    try:
        assert engine.wait_ready(120)
        with pytest.raises(InvalidRequest) as info:
            engine.embed(EmbedRequest(("hello",)))
        assert info.value.field == "model" and "POOLING" in info.value.message
    finally:
        engine.close()


def test_an_embedding_model_does_not_generate_and_still_tokenizes(minilm_engine):
    with pytest.raises(InvalidRequest) as info:
        minilm_engine.submit(Request(prompt="hello"))
    assert info.value.field == "model" and "only embeds" in info.value.message
    assert minilm_engine.tokenize("hello world", add_special=True)[0] == 101  # [CLS]


def test_mean_pooling_matches_llama_cpp_s_own(minilm_gguf, minilm_engine):
    """llama.cpp's mean pooling (a matrix product over the batch) and ours (per sequence) agree
    to float rounding: the filler rows between sequences change nothing a sequence sees."""
    from llama_cpp import Llama

    llm = Llama(str(minilm_gguf), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, verbose=False)
    try:
        theirs = [np.asarray(llm.embed(t), dtype=np.float64) for t in TEXTS[:-1]]
    finally:
        llm.close()
    ours = embed(minilm_engine, TEXTS)
    for text, a, b in zip(TEXTS[:-1], theirs, ours):  # the last: llama-cpp-python reads "[SEP]" as text
        cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert cosine > 0.99999, f"{text!r}: cosine {cosine}"


def test_rerank_scores_are_the_head_of_the_cls_vector_and_keep_their_bits(reranker_engine, minilm_gguf):
    """A reranker (MiniLM with a seeded random head, tests/server/embed_models.py) scores each
    (query, document) pair as cls.output(tanh(cls(h_CLS))): checked against numpy from the
    [CLS] vector that the same model served with POOLING=cls gives for the same tokens."""
    engine = reranker_engine
    docs = tuple(TEXTS)
    together = engine.rerank(RankRequest("Where is Paris?", docs)).wait().vectors
    for i, doc in enumerate(docs):
        single = engine.rerank(RankRequest("Where is Paris?", (doc,))).wait().vectors[0]
        assert single.shape == (1,) and same_bits(single, together[i]), doc
    pairs = rank_sequences(RankRequest("Where is Paris?", docs), engine._embedder.facts, 10)
    assert pairs[0][:1] == [101] and pairs[0].count(102) == 2  # [CLS] query [SEP] document [SEP]
    cls_engine = Engine(Settings(**EMBED_SETTINGS, pooling="cls"), ModelChoice(minilm_gguf, is_default=False)).start()
    try:
        assert cls_engine.wait_ready(120)
        cls_vectors = cls_engine.embed(EmbedRequest(tuple(tuple(p) for p in pairs))).wait().vectors
    finally:
        cls_engine.close()
    head = head_weights(engine.info["embedding"]["n_embd"])
    for doc, vector, score in zip(docs, cls_vectors, together):
        assert abs(head_score(vector.astype(np.float64), head) - float(score[0])) < 1e-3, doc
    scores = [float(s[0]) for s in together]
    assert len(set(scores)) == len(scores)  # the documents are told apart
    with pytest.raises(InvalidRequest) as info:
        engine.embed(EmbedRequest(("x",)))
    assert info.value.field == "model" and "rerank" in info.value.message


def test_a_cut_text_keeps_the_model_s_closing_token(minilm_engine):
    facts = minilm_engine._embedder.facts
    [cut] = embed_sequences(EmbedRequest(("word " * 700,)), facts, 10)
    assert len(cut) == 512 and cut[0] == 101 and cut[-1] == 102 and cut[-2] != 102  # [CLS] word ... word [SEP]
    [ids] = embed_sequences(EmbedRequest((tuple(range(1000, 1600)),)), facts, 10)
    assert ids == list(range(1000, 1512))  # token lists are cut as given


def test_rank_pooling_without_a_classification_head_is_refused_at_load(minilm_gguf):
    engine = Engine(Settings(**EMBED_SETTINGS, pooling="rank"), ModelChoice(minilm_gguf, is_default=False)).start()
    try:
        assert not engine.wait_ready(60)
        assert "no classification head" in (engine.load_error or "")
    finally:
        engine.close()


def test_the_pooling_setting_is_checked():
    assert Settings.from_env({"LLAMA_SERVER_POOLING": "CLS"}).pooling == "cls"
    assert Settings.from_env({}).pooling is None
    with pytest.raises(SettingsError, match="LLAMA_SERVER_POOLING"):
        Settings.from_env({"LLAMA_SERVER_POOLING": "max"})
    with pytest.raises(SettingsError, match="LLAMA_SERVER_EMBED_MAX_INPUTS"):
        Settings.from_env({"LLAMA_SERVER_EMBED_MAX_INPUTS": "0"})


def test_embeddings_do_not_count_as_requests_waiting_for_a_slot(smollm_embed_engine):
    engine = smollm_embed_engine
    gens = [engine.submit(Request(prompt=p, sampling=LONG)) for p in ("Once upon a time", "In the beginning")]
    try:
        depths = []
        for text in TEXTS[:6:2]:  # every slot is generating: the worker does not read its queue now
            engine.embed(EmbedRequest((text,))).wait()
            depths.append(engine.queue_depth())
        assert engine.active == 2 and depths == [0, 0, 0]
    finally:
        for g in gens:
            g.cancel()


def test_a_one_text_request_is_not_kept_behind_a_bulk_one(minilm_engine):
    """Jobs take turns leading a batch, a new one first: a request of one text, sent after one of 120
    (about 12 batches of 10 texts of 20-odd tokens), is answered while the bulk request still has texts to go."""
    bulk = minilm_engine.embed(EmbedRequest(tuple(f"{i} " + "a llama walks " * 6 for i in range(120))))
    quick = minilm_engine.embed(EmbedRequest(("one text",)))
    quick.wait()
    assert not bulk.finished
    assert len(bulk.wait().vectors) == 120


def test_without_batch_invariance_sequences_are_packed_tight(minilm_gguf, minilm_engine):
    engine = Engine(Settings(**EMBED_SETTINGS, batch_invariant=False), ModelChoice(minilm_gguf, False)).start()
    try:
        assert engine.wait_ready(120)
        answer = engine.embed(EmbedRequest(tuple(TEXTS))).wait()
        assert engine.decoder_stats().tokens == answer.prompt_tokens  # no filler rows
        for text, loose, exact in zip(TEXTS, answer.vectors, embed(minilm_engine, TEXTS)):
            cosine = float(loose @ exact / np.linalg.norm(loose) / np.linalg.norm(exact))
            assert cosine > 0.9999, text
    finally:
        engine.close()
