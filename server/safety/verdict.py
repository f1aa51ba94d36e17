"""The guard's answer: the grammar that constrains it, its score, and what it says.

Decoding is greedy and constrained by a GBNF grammar to Llama Guard's two answers,
`safe` or `unsafe` and on a second line the violated categories (`S1,S10`), only codes
of the guard's own list. A line break or two may come first: Llama Guard 3-8B's template
stops right after the assistant header, where Llama 3 writes "\n\n".

The score is P(first token is "unsafe"), the model cards' classifier score, read from
the log-probabilities of the first token of the label (llama.cpp's raw distribution,
before the grammar): the probability of every token there that begins "unsafe" over that
of every token that begins either answer. For Llama Guard those two answers hold nearly
all of the probability, so this is the model cards' number; for a model that was not
trained as a guard it is still a probability between 0 and 1 (tests run SmolLM2 so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from server.engine.logprobs import TokenLogprob
from server.safety.prompt import GuardFormat

MAX_TOKENS = 48  # "unsafe\n" and up to fourteen codes
TOP = 20  # alternatives read at the label's token


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    score: float  # P(unsafe)
    categories: tuple[str, ...]  # codes the guard named, excluded ones left out
    said: str = ""  # the guard's answer as it wrote it


def grammar(fmt: GuardFormat) -> str:
    codes = sorted(fmt.codes(), key=lambda c: (-len(c), c))  # S10 before S1 reads easier; GBNF tries both
    return (
        'root ::= lead ("safe" | "unsafe\\n" cat ("," cat)*)\n'
        'lead ::= "\\n"? "\\n"?\n'
        "cat ::= " + " | ".join(f'"{c}"' for c in codes) + "\n"
    )


def score(records: Sequence[TokenLogprob], said: str) -> float:
    """P(unsafe) at the first token of the label (see the module docstring)."""
    import math

    label = next((r for r in records if _label(r.piece)), None)
    masses = {"unsafe": 0.0, "safe": 0.0}
    if label is not None:
        seen: set[int] = set()
        for token, piece, logprob in ((label.token, label.piece, label.logprob), *label.top):
            if token in seen:
                continue
            seen.add(token)
            text = _label(piece)
            for answer in ("unsafe", "safe"):
                if text and answer.startswith(text):
                    masses[answer] += math.exp(logprob)
                    break
    total = masses["unsafe"] + masses["safe"]
    if total <= 0:  # neither answer among the alternatives read: the answer itself decides
        return 1.0 if said.strip().startswith("unsafe") else 0.0
    return masses["unsafe"] / total


def parse(said: str) -> tuple[bool, tuple[str, ...]]:
    """(said unsafe, the category codes of its second line)."""
    lines = said.strip().split("\n")
    unsafe = lines[0].strip() == "unsafe"
    codes = tuple(c.strip() for c in lines[1].split(",") if c.strip()) if unsafe and len(lines) > 1 else ()
    return unsafe, codes


def decide(said: str, p_unsafe: float, threshold: float, excluded: Sequence[str] = ()) -> Verdict:
    """Flagged when P(unsafe) reaches the threshold, unless every category named is excluded."""
    _, codes = parse(said)
    kept = tuple(dict.fromkeys(c for c in codes if c not in excluded))
    flagged = p_unsafe >= threshold and not (codes and not kept)
    return Verdict(flagged, p_unsafe, kept if flagged else (), said)


def _label(piece: bytes) -> str:
    return piece.decode("utf-8", errors="ignore").lstrip("\n ")
