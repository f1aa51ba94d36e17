"""The Llama Guard prompt, written here and never taken from the GGUF's chat template.

Community GGUFs of Llama Guard carry chat templates that llama.cpp cannot run or that
drop the category list, and llama-cpp-python passes a template no `categories` or
`excluded_category_keys`; so the prompt is built in code, byte for byte as the
checkpoints' own Hugging Face templates render it (tokenizer_config.json):

- Llama Guard 3-8B: categories S1-S14, no space before `<|eot_id|>`. (Its template puts one
  space before `<|begin_of_text|>`; that space is left out here, as it would put a token
  before BOS.)
- Llama Guard 3-1B (and 3-11B-Vision): S1-S13 (no Code Interpreter Abuse), one space
  before `<|eot_id|>`, and categories in `excluded_category_keys` left out.
- Llama Guard 2: S1-S11 in its own numbering, names with a trailing space, wrapped in
  `[INST] ... [/INST]` (llama-recipes' PROMPT_TEMPLATE_2 and build_custom_prompt).

The task line and the last instruction name the role checked: `User` for what a user
sent (input), `Agent` for a model's answer (output). "according our safety policy"
(sic) is Meta's text and what the models were trained on. Excluded categories are left
out of the list while the others keep their numbers (S6 gone, S7 still S7).

`render` returns pieces: the template's own text, which may hold control tokens, and
the conversation's text, which is tokenized as plain text (server/model/pieces.py), so
a message typing `<|eot_id|>` or `<END CONVERSATION>` stays characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from server.model.pieces import Piece

# Prompt names, in each model's order (S1 first), as the templates write them.
LLAMA_GUARD_3 = (
    "Violent Crimes.",
    "Non-Violent Crimes.",
    "Sex Crimes.",
    "Child Exploitation.",
    "Defamation.",
    "Specialized Advice.",
    "Privacy.",
    "Intellectual Property.",
    "Indiscriminate Weapons.",
    "Hate.",
    "Self-Harm.",
    "Sexual Content.",
    "Elections.",
    "Code Interpreter Abuse.",
)
LLAMA_GUARD_2 = (
    "Violent Crimes. ",
    "Non-Violent Crimes. ",
    "Sex Crimes. ",
    "Child Exploitation. ",
    "Specialized Advice. ",
    "Privacy. ",
    "Intellectual Property. ",
    "Indiscriminate Weapons. ",
    "Hate. ",
    "Self-Harm. ",
    "Sexual Content. ",
)

TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy "
    "with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
)
CONVERSATION = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
INSTRUCTIONS = (
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)
LLAMA3_HEAD = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
LLAMA3_TAIL = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
ROLES = ("User", "Agent")


@dataclass(frozen=True)
class GuardFormat:
    name: str
    categories: tuple[str, ...]  # prompt names; S<i+1> is categories[i]
    head: str
    tail: str

    def codes(self) -> tuple[str, ...]:
        return tuple(f"S{i + 1}" for i in range(len(self.categories)))

    def category_name(self, code: str) -> str | None:
        """The category's name without its period ("Violent Crimes"), None for a code it lacks."""
        codes = self.codes()
        return self.categories[codes.index(code)].strip().rstrip(".") if code in codes else None


FORMATS = {
    "llama-guard-3": GuardFormat("llama-guard-3", LLAMA_GUARD_3, LLAMA3_HEAD, LLAMA3_TAIL),
    "llama-guard-3-1b": GuardFormat("llama-guard-3-1b", LLAMA_GUARD_3[:13], LLAMA3_HEAD, " " + LLAMA3_TAIL),
    "llama-guard-2": GuardFormat("llama-guard-2", LLAMA_GUARD_2, "[INST] ", " [/INST]"),
}


@dataclass(frozen=True)
class Turn:
    role: str  # "User" or "Agent"
    text: str


def render(fmt: GuardFormat, turns: Sequence[Turn], excluded: Sequence[str] = ()) -> list[Piece]:
    """The guard's prompt for `turns`, checking the last one, as (text, from the template) pieces.

    Turns must alternate, User first, as the templates demand (see `alternate`)."""
    if not turns:
        raise ValueError("a guard check needs at least one turn")
    for i, turn in enumerate(turns):
        if turn.role != ROLES[i % 2]:
            raise ValueError("guard turns must alternate User, Agent, User, ...")
    role = turns[-1].role
    listed = "".join(f"{code}: {name}\n" for code, name in zip(fmt.codes(), fmt.categories) if code not in excluded)
    pieces: list[Piece] = [(fmt.head + TASK.format(role=role) + listed + CONVERSATION, True)]
    for turn in turns:
        pieces += [(f"{turn.role}: ", True), (turn.text.strip(), False), ("\n\n", True)]
    pieces.append((INSTRUCTIONS.format(role=role) + fmt.tail, True))
    return _merged(pieces)


def text_of(pieces: Sequence[Piece]) -> str:
    return "".join(text for text, _ in pieces)


def alternate(turns: Sequence[Turn]) -> list[Turn]:
    """`turns` as the templates take them: consecutive turns of one role joined by a blank
    line, and an empty User turn before an Agent one that comes first."""
    out: list[Turn] = []
    for turn in turns:
        if out and out[-1].role == turn.role:
            out[-1] = Turn(turn.role, out[-1].text.rstrip() + "\n\n" + turn.text.lstrip())
        else:
            out.append(Turn(turn.role, turn.text))
    if out and out[0].role != "User":
        out.insert(0, Turn("User", ""))
    return out


def _merged(pieces: list[Piece]) -> list[Piece]:
    """Neighbouring pieces of one kind joined, empty ones dropped."""
    out: list[Piece] = []
    for text, trusted in pieces:
        if not text:
            continue
        if out and out[-1][1] == trusted:
            out[-1] = (out[-1][0] + text, trusted)
        else:
            out.append((text, trusted))
    return out
