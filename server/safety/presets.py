"""Named system prompts: SYSTEM_PROMPT=@name stands for one of these.

`@llama2-safety` is the default system prompt of Meta's Llama 2 reference code as released
(meta-llama/llama, llama/generation.py, 2023-07-18: DEFAULT_SYSTEM_PROMPT, two spaces after
"while being safe." as there). Meta removed it as the default on 2023-08-04 to reduce false
refusals (docs/safety-layer.md); it is here for whoever wants it back, never by default.
"""

from __future__ import annotations

LLAMA2_SAFETY = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering something "
    "not correct. If you don't know the answer to a question, please don't share false information."
)

SYSTEM_PROMPTS = {"llama2-safety": LLAMA2_SAFETY}


def system_prompt(text: str) -> str:
    """SYSTEM_PROMPT's value: `@name` -> that preset's text (ValueError for an unknown name), else as given."""
    if not text.startswith("@") or " " in text.strip():
        return text
    name = text.strip()[1:]
    if name not in SYSTEM_PROMPTS:
        raise ValueError(f"no system prompt preset '@{name}'; there are: " + ", ".join("@" + n for n in SYSTEM_PROMPTS))
    return SYSTEM_PROMPTS[name]
