"""TextAssembler and SamplingParams: how sampled token bytes become streamed text."""

from __future__ import annotations

import numpy as np
import pytest

from server.engine.sampling import SamplingParams, TextAssembler


def stream(pieces: list[bytes], stops=()) -> tuple[list[str], bool, str]:
    asm = TextAssembler(tuple(stops))
    out, hit = [], False
    for piece in pieces:
        text, hit = asm.feed(piece)
        out.append(text)
        if hit:
            break
    return out, hit, "" if hit else asm.flush()


def test_a_character_split_across_tokens_is_emitted_whole():
    euro = "€".encode()  # three bytes
    out, hit, tail = stream([b"5 ", euro[:1], euro[1:2], euro[2:] + b"!"])
    assert out == ["5 ", "", "", "€!"] and not hit and tail == ""


def test_stop_string_across_tokens_ends_before_it():
    out, hit, _ = stream([b"Hello ", b"wor", b"ld. ", b"Bye"], stops=["world"])
    assert hit and "".join(out) == "Hello "


def test_text_that_only_starts_a_stop_string_is_released():
    out, hit, tail = stream([b"a wo", b"rm"], stops=["world"])
    assert out == ["a ", "worm"] and not hit and tail == ""


def test_held_text_is_flushed_at_the_end():
    out, hit, tail = stream([b"the end: wor"], stops=["world"])
    assert out == ["the end: "] and not hit and tail == "wor"


def test_earliest_of_several_stop_strings_wins():
    out, hit, _ = stream([b"x = 1\n\nUser: hi"], stops=["User:", "\n\n"])
    assert hit and out == ["x = 1"]


def test_invalid_bytes_become_replacement_characters_not_errors():
    out, _, tail = stream([b"ok \xff", b"\xfe done"])
    assert "".join(out) + tail == "ok \ufffd\ufffd done"


def test_sampling_params_normalize_stop_and_check_max_tokens():
    assert SamplingParams(stop=["", "END"]).stop == ("END",)
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=0)


def test_greedy_token_equals_penalizing_a_copy_of_every_logit():
    """The fast path (argmax first, penalize only when the best token is recent) picks what the
    plain method picks: penalize a copy of all logits, then argmax. Ties and zeros included."""
    from server.engine.sampling import greedy_token

    rng = np.random.default_rng(0)
    for case in range(3000):
        logits = rng.integers(-3, 4, size=50).astype(np.float32)  # small integers: many ties and zeros
        if case % 2:
            logits *= rng.random(50, dtype=np.float32)
        recent = rng.integers(0, 50, size=rng.integers(0, 12)).tolist()
        penalty = float(rng.choice([1.0, 1.1, 1.3]))
        plain = logits.copy()
        if penalty != 1.0 and recent:
            ids = np.unique(recent)
            plain[ids] = np.where(plain[ids] <= 0, plain[ids] * np.float32(penalty), plain[ids] / np.float32(penalty))
        assert greedy_token(logits.copy(), recent, penalty) == int(plain.argmax()), (case, recent, penalty)
