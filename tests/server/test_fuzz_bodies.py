"""Property-based: whatever body reaches a POST route, the answer is never a 5xx.

Every POST route (ours, OpenAI's, Ollama's, /tokenize, /detokenize). Hypothesis builds
each route's bodies from its own fields: plausible values (any text, control-token text
included, any in-range sampling value), the same with one value anywhere swapped for any
JSON value (a string with a lone surrogate, a huge or non-finite number, nested arrays
and objects), every field wild, or not an object at all; it adds unknown fields, and
writes the result as JSON with NaN literals, as UTF-8 with raw surrogates, wrapped in
deep nesting or cut short. Every answer must be below 500, every 4xx in the dialect's
error shape, a 200 a complete answer (a stream is read to its end), and the server must
answer an ordinary question afterwards. Plausible bodies alone must all be answered
(or refused only as too long for the context).

The bulk goes through the Flask test client over the real Gemma engine; a smaller
share goes over real sockets to real gunicorn. Runs are derandomized, so a failure
reproduces; answers are kept to at most 2 tokens so the valid bodies stay quick.
"""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import make_client
from tests.server.gunicorn_util import KEYED

pytestmark = pytest.mark.slow

OLLAMA = ("/api/chat", "/api/generate", "/api/show")
ROUTES = ["/api/respond", "/v1/chat/completions", "/v1/completions", *OLLAMA, "/tokenize", "/detokenize"]
# Routes that never generate are quick: more examples for them.
EXAMPLES = {"/api/show": 100, "/tokenize": 100, "/detokenize": 100}
SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

# Text: any code point but lone surrogates, and the markers a chat template uses; WILD_TEXT adds surrogates.
MARKERS = st.sampled_from(["<start_of_turn>", "<end_of_turn>\n", "<bos>", "</s>", "[INST]", "<|im_end|>", "{{ x }}"])
TEXT = st.lists(st.text(st.characters(), max_size=12) | MARKERS, max_size=4).map("".join)
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
WILD_TEXT = st.lists(st.text(st.characters() | SURROGATES, max_size=12) | MARKERS, max_size=4).map("".join)
ODD_TEXT = st.builds(lambda a, odd, b: a + odd + b, TEXT, SURROGATES, TEXT)  # never valid Unicode
NUMBER = st.integers() | st.integers(-(10**40), 10**40) | st.floats(allow_nan=True, allow_infinity=True)
LEAF = st.none() | st.booleans() | NUMBER | WILD_TEXT
ANY = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WILD_TEXT, inner, max_size=3), max_leaves=8
)


def body(required: dict, optional: dict, wild: bool):
    """A route's body from its fields' plausible strategies; `wild`: each field may be anything instead."""
    if wild:
        required = {k: st.one_of(v, v, ANY) for k, v in required.items()}
        optional = {k: st.one_of(v, v, ANY) for k, v in optional.items()}
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def one_spot_off(draw, plausible):
    """A plausible body with one value anywhere in it (a field, a turn, a role, a stop string ...)
    replaced by any JSON value: every validator is reached with everything else right."""
    value = draw(plausible)
    spots = list(_spots(value))
    container, key = draw(st.sampled_from(spots))
    container[key] = draw(st.one_of(ODD_TEXT, ANY))
    return value


def _spots(value):
    """(container, key) of every value inside `value`."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield value, key
        yield from _spots(item)


@st.composite
def bodies(draw, required: dict, optional: dict):
    """Plausible bodies, ones with one spot off, all fields wild, or any JSON at all. Chosen by
    sampled_from, whose simplest value (the one Hypothesis favours) is the first: plausible."""
    plausible = body(required, optional, False)
    kind = draw(st.sampled_from(["plausible", "one spot off", "wild", "one spot off", "any"]))
    if kind == "plausible":
        return draw(plausible)
    if kind == "one spot off":
        return draw(one_spot_off(plausible))
    return draw(body(required, optional, True) if kind == "wild" else ANY)


WORD = st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True)
SAID = st.builds(lambda a, w, b: a + w + b, TEXT, WORD, TEXT)  # text with something in it
PART = st.fixed_dictionaries({"type": st.just("text"), "text": SAID})


def conversation(system: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(role, text) turns as chat templates want them: a system prompt or none, then user and
    assistant taking turns (Gemma's template refuses anything else, with a 400)."""
    turns = [("system", system)] if system else []
    for user, answer in pairs:
        turns += [("user", user), ("assistant", answer)]
    return turns


PAIRS = st.lists(st.tuples(SAID, SAID), max_size=2)
HISTORY = PAIRS.map(lambda pairs: [{"role": r, "content": c} for r, c in conversation("", pairs)])


def chat(system: str, pairs: list[tuple[str, str]], last: str, parts: list[dict]) -> list[dict]:
    turns = [{"role": role, "content": text} for role, text in conversation(system, pairs)]
    return turns + [{"role": "user", "content": parts or last}]  # the question as text or as text parts


MESSAGES = st.builds(chat, st.one_of(st.just(""), SAID), PAIRS, SAID, st.lists(PART, max_size=2))
SAMPLING = {
    "max_tokens": st.integers(1, 2),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 1000),
    "min_p": st.floats(0, 1),
    "repeat_penalty": st.floats(0.5, 2),
    "seed": st.integers(0, 2**32 - 1),
    "stop": st.lists(st.text(st.characters(), min_size=1, max_size=8), max_size=2),
    "stream": st.booleans(),
}
OPENAI = {
    "model": TEXT,
    "n": st.just(1),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_completion_tokens": st.integers(1, 2),
    "presence_penalty": st.just(0),
    "user": TEXT,
}
OPTIONS = {**{k: v for k, v in SAMPLING.items() if k not in ("max_tokens", "stream")}, "num_predict": st.integers(1, 2)}
OLLAMA_MESSAGES = MESSAGES.map(
    lambda ms: [{**m, "content": m["content"] if isinstance(m["content"], str) else "x"} for m in ms]
)


def route_bodies(route: str, model: str, plausible: bool = False):
    """Bodies for `route` (only plausible ones if `plausible`); `model`: the served model's name,
    which Ollama's routes must be given."""
    ollama = {"stream": st.booleans(), "options": st.fixed_dictionaries({}, optional=OPTIONS)}
    table = {
        "/api/respond": ({"query": SAID}, {**SAMPLING, "system": TEXT, "history": HISTORY}),
        # The served model's name, or none (the default): another name is a 404 (tests/server/test_library.py).
        "/v1/chat/completions": ({"messages": MESSAGES}, {**SAMPLING, **OPENAI, "model": st.just(model)}),
        "/v1/completions": ({"prompt": SAID}, {**SAMPLING, **OPENAI, "model": st.just(model)}),
        "/api/chat": ({"model": st.just(model), "messages": OLLAMA_MESSAGES}, ollama),
        "/api/generate": ({"model": st.just(model), "prompt": SAID}, {**ollama, "system": TEXT}),
        "/api/show": ({"model": st.just(model)}, {"verbose": st.booleans()}),
        "/tokenize": ({"content": TEXT}, {"add_special": st.booleans(), "with_pieces": st.booleans()}),
        "/detokenize": ({"tokens": st.lists(st.integers(0, 2000), max_size=8)}, {}),
    }
    return bodies(*table[route]) if not plausible else body(*table[route], wild=False)


@st.composite
def raw_body(draw, route: str, model: str, short: bool = False) -> bytes:
    """A body for `route` as bytes, written one of several ways. `short`: answers of at most
    2 tokens on a server that allows more (a long answer proves nothing here and takes seconds)."""
    value = draw(route_bodies(route, model))
    if isinstance(value, dict) and draw(st.integers(0, 3)) == 3:  # not 0: Hypothesis favours the simplest value
        value = {**value, **draw(st.dictionaries(WILD_TEXT, ANY, min_size=1, max_size=2))}  # unknown fields
    if short and isinstance(value, dict):
        limits = value.get("options") if route in ("/api/chat", "/api/generate") else value
        if isinstance(limits, dict):
            limits.setdefault("num_predict" if limits is not value else "max_tokens", 1)
            for name in ("max_tokens", "max_completion_tokens", "num_predict"):
                if type(limits.get(name)) is int and (2 < limits[name] < 10_000 or limits[name] < 0):
                    limits[name] = 2
    how = draw(st.sampled_from(["ascii"] * 6 + ["utf8", "deep", "cut"]))
    if how == "utf8":  # raw surrogates, encoded as the invalid UTF-8 some clients send
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    text = json.dumps(value)  # NaN and Infinity as literals, surrogates as \\ud800 escapes
    if how == "deep":
        depth = draw(st.integers(0, 3000))
        text = "[" * depth + text + "]" * depth
    elif how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode()


def message_of(route: str, status: int, body: bytes) -> str:
    """The error message of a 4xx, checking the route's dialect's error shape on the way."""
    error = json.loads(body)["error"]
    if route in OLLAMA:
        assert isinstance(error, str) and error, error  # Ollama's {"error": "..."}
        return error
    wanted = {"message", "type", "param", "code"} if route.startswith("/v1/") else {"type", "message"}
    assert wanted <= set(error) and error["message"], error
    return error["message"]


def check_answer(route: str, status: int, content_type: str, body: bytes) -> str | None:
    """Fail on a 5xx or a malformed answer; the error message of a 4xx."""
    assert status < 500, body[:500]
    if status >= 400:
        return message_of(route, status, body)
    if content_type.startswith("text/event-stream"):
        events = [e for e in body.decode().split("\n\n") if e.startswith("data: ")]
        last = events[-1][len("data: ") :]
        assert last == "[DONE]" or json.loads(last)["type"] in ("done", "error"), events
    elif content_type.startswith("application/x-ndjson"):
        last = json.loads(body.decode().splitlines()[-1])
        assert last.get("done") is True or "error" in last, last
    else:
        assert isinstance(json.loads(body), dict)
    return None


def served_name(get) -> str:
    """The default model's name (the one the app's engine serves)."""
    return next(m["id"] for m in get("/v1/models")["data"] if m.get("default"))


@pytest.fixture(scope="module")
def client(gemma_engine):
    return make_client(gemma_engine, max_tokens=1, max_tokens_ceiling=2)


@pytest.mark.parametrize("route", ROUTES)
def test_no_body_gets_a_5xx_through_the_app(client, route):
    model = served_name(lambda path: client.get(path).json)

    @settings(max_examples=EXAMPLES.get(route, 60), **SETTINGS)
    @given(raw_body(route, model))
    def run(data: bytes) -> None:
        response = client.post(route, data=data, content_type="application/json")
        check_answer(route, response.status_code, response.content_type, response.get_data())

    run()
    ordinary = client.post("/api/respond", json={"query": "Hello", "max_tokens": 1})
    assert ordinary.status_code == 200 and ordinary.json["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("route", ROUTES)
def test_every_plausible_body_is_answered(client, route):
    """Any text (control-token text included) and any in-range sampling values: an answer, or a 400
    only for a prompt too long for the context."""
    model = served_name(lambda path: client.get(path).json)

    @settings(max_examples=EXAMPLES.get(route, 60) // 2, **SETTINGS)
    @given(route_bodies(route, model, plausible=True))
    def run(value: dict) -> None:
        response = client.post(route, json=value)
        refused = check_answer(route, response.status_code, response.content_type, response.get_data())
        assert response.status_code == 200 or "exceeds the context" in (refused or ""), refused

    run()


@pytest.mark.parametrize("route", ROUTES)
def test_no_body_gets_a_5xx_from_real_gunicorn(keyed_server, route):
    base = keyed_server[1]
    session = requests.Session()

    model = served_name(lambda path: session.get(f"{base}{path}", headers=KEYED, timeout=10).json())

    @settings(max_examples=15, **SETTINGS)
    @given(raw_body(route, model, short=True))
    def run(data: bytes) -> None:
        headers = {**KEYED, "Content-Type": "application/json"}
        response = session.post(f"{base}{route}", data=data, headers=headers, timeout=120)
        check_answer(route, response.status_code, response.headers.get("Content-Type", ""), response.content)

    run()
    ordinary = session.post(f"{base}/api/respond", json={"query": "Hello", "max_tokens": 1}, headers=KEYED, timeout=60)
    assert ordinary.status_code == 200 and ordinary.json()["usage"]["completion_tokens"] == 1
