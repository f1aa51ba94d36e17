"""The examples in README.md and docs/: found, with their markers, and their output read.

Every ```sh and ```python block (and bash, shell, console, py) must have, on the line before it (blank lines
between allowed), one of the markers below (docs/layout.md#examples-in-these-pages says the same for writers):

    <!-- run -->                 run it; exit 0, some output; a shell block's output must be JSON
    <!-- run: expect K1 K2 -->   the same, and each key is a key of one of the JSON objects printed
    <!-- run: text -->           run it; exit 0, some output, which is text (no JSON check)
    <!-- illustrative: why -->   not run (it starts a server, downloads gigabytes, needs a GPU...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "console": "sh", "python": "python", "py": "python"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*(run|illustrative)\b:?\s*(.*?)\s*-->$")
DEFAULT_ADDRESS = "127.0.0.1:8000"


@dataclass(frozen=True)
class Example:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str  # "sh" or "python"
    code: str
    marker: str | None  # "run", "illustrative" or None (unmarked)
    detail: str  # after the marker's colon: "expect a b", "text", or the reason

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def expected_keys(self) -> list[str]:
        words = self.detail.split()
        return words[1:] if words[:1] == ["expect"] else []

    @property
    def prints_json(self) -> bool:
        return self.language == "sh" and self.detail != "text"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples(path: Path) -> list[Example]:
    """The shell and Python blocks of one Markdown file, each with the marker before it."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
        if info.lower() in LANGUAGES:
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(before)
            code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
            found.append(
                Example(
                    path,
                    i + 1,
                    LANGUAGES[info.lower()],
                    code,
                    marker.group(1) if marker else None,
                    marker.group(2) if marker else "",
                )
            )
        i = end + 1
    return found


def all_examples() -> list[Example]:
    return [example for path in documents() for example in examples(path)]


def json_documents(output: str) -> list:
    """Every JSON document in a command's output: whole answers, NDJSON lines and server-sent events'
    `data:` lines (OpenAI's closing `data: [DONE]` is not JSON and is skipped). ValueError if any is not JSON."""
    lines = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line.removeprefix("data:").strip()
            if line == "[DONE]":
                continue
        lines.append(line)
    text, decoder, found, at = "\n".join(lines), json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        value, at = decoder.raw_decode(text, at)  # raises ValueError (JSONDecodeError) where it is not JSON
        found.append(value)
