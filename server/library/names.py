"""Model names as users write them: `name`, `name:latest`, aliases, and pull references.

A model's name is its file's stem; Ollama's clients add `:latest`, which means the
same. Names never reach the file system: a name with a path separator, `..`, a NUL, a
drive or a URL scheme is refused (400) unless it is a well-formed pull reference
(`hf.co/USER/REPO[:QUANT]`, `huggingface.co/...`, `USER/REPO/FILE.gguf`), which is
matched against what was pulled, never opened as a path.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from server.errors import InvalidRequest

MAX_NAME = 256
# A Hugging Face repo id part: letters, digits, '-', '_', '.', not starting with '.' or '-'.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_QUANT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HF_REF = re.compile(rf"^(?:hf\.co|huggingface\.co)/({_PART})/({_PART})(?::({_QUANT}))?$", re.IGNORECASE)
FILE_REF = re.compile(rf"^({_PART})/({_PART})/((?:{_PART}/)*{_PART}\.gguf)$", re.IGNORECASE)
_PLAIN = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,256}$")


@dataclass(frozen=True)
class PullRef:
    """A model on the Hugging Face Hub: a repo and a quant tag, or a repo and one file."""

    repo_id: str
    quant: str | None = None  # None with `filename`; default "Q4_K_M" otherwise
    filename: str | None = None

    @property
    def canonical(self) -> str:
        if self.filename:
            return f"{self.repo_id}/{self.filename}"
        return f"hf.co/{self.repo_id}:{self.quant or 'Q4_K_M'}"


def key(name: str) -> str:
    """The form names are compared in: without `:latest`, case folded."""
    return name.strip().casefold().removesuffix(":latest")


def pull_ref(name: str) -> PullRef | None:
    """The pull reference `name` spells, or None when it is not one."""
    if ".." in name:
        return None
    if match := HF_REF.match(name):
        return PullRef(f"{match.group(1)}/{match.group(2)}", match.group(3) or "Q4_K_M")
    if match := FILE_REF.match(name):
        return PullRef(f"{match.group(1)}/{match.group(2)}", filename=match.group(3))
    return None


def check_name(name: str, field: str = "model") -> str:
    """`name` if it can name a model (a plain name or a pull reference); else 400 naming `field`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"'{field}' must name a model", field)
    if len(name) > MAX_NAME:
        raise InvalidRequest(f"'{field}' must be at most {MAX_NAME} characters", field)
    if pull_ref(name) is not None:
        return name
    plain = _PLAIN.match(name) and name not in (".", "..") and "://" not in name
    if not plain or name.startswith((".", "~")) or re.match(r"^[A-Za-z]:", name):
        raise InvalidRequest(
            f"'{field}' must be a model name (no paths or URLs) or a pull reference like hf.co/USER/REPO:Q4_K_M",
            field,
        )
    return name


def nearest(name: str, names: list[str], n: int = 5) -> list[str]:
    """`names` ordered with the closest to `name` first (all of them, the close ones leading)."""
    if not names:
        return []
    close = difflib.get_close_matches(key(name), [key(x) for x in names], n=len(names), cutoff=0.0)
    by_key = {key(x): x for x in names}
    ordered = list(dict.fromkeys(by_key[k] for k in close))
    return ordered[:n] + [x for x in sorted(names) if x not in ordered[:n]]
