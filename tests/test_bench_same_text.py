"""The same-text bench's requests and verdict (bench/same_text.py).

Both servers must get the same request for a prompt (the system prompt, greedy, no repeat penalty),
as chat messages or as one raw text; and a server's count must say how many prompts had llama-server's
prompt tokens and text. The real runs are the bench's own.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))

import same_text  # noqa: E402


def test_chat_and_raw_requests_carry_the_system_prompt_and_greedy_sampling():
    chat = same_text.body(Namespace(endpoint="chat/completions", max_tokens=7), "Hi?")
    raw = same_text.body(Namespace(endpoint="completions", max_tokens=7), "Hi?")
    assert chat["messages"] == [{"role": "system", "content": same_text.SYSTEM}, {"role": "user", "content": "Hi?"}]
    assert raw["prompt"] == f"{same_text.SYSTEM}\n\nHi?\n"
    for b in (chat, raw):
        assert (b["max_tokens"], b["temperature"], b["repeat_penalty"]) == (7, 0, 1.0)


def test_compare_counts_prompts_that_match_llama_server():
    names = list(same_text.PROMPTS)
    ref = {p: {"prompt_tokens": 10, "text": f"answer {p}"} for p in names}
    ours = {p: dict(ref[p]) for p in names}
    ours[names[0]]["text"] = "something else"
    ours[names[1]]["prompt_tokens"] = 11
    summary = same_text.compare({"ours": ours, "llama-server": ref})
    assert summary["ours"] == {"same_prompt_tokens": len(names) - 1, "same_text": len(names) - 1, "prompts": len(names)}
    assert summary["llama-server"]["same_text"] == len(names)
