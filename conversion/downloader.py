"""download: fetch only what conversion needs from the Hugging Face Hub.

Files land in a Hugging Face cache folder (models--org--name/blobs, snapshots,
refs), so an interrupted download resumes and a repeated one is free. The
repo's file sizes are looked up first so that a full disk is reported before
gigabytes are spent. huggingface-hub's errors become one-paragraph messages.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from conversion.errors import DownloadError

NEEDED_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "*.safetensors",
    "model.safetensors.index.json",
]
DISK_MARGIN = 1.05  # leave a little room: the cache writes .incomplete files first


def download(
    repo_id: str, dest, revision: str | None = None, endpoint: str | None = None, progress: bool = True
) -> Path:
    """Download the checkpoint files of `repo_id` into the cache folder `dest`; return the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars, validate_repo_id
    from tqdm import tqdm

    from conversion.progress import bar_class

    try:  # before anything is created on disk: a mistyped local path lands here too
        validate_repo_id(repo_id)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise classify(exc, repo_id, revision) from None
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    check_disk(repo_id, dest, revision, endpoint)
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=dest,
            endpoint=endpoint,
            allow_patterns=NEEDED_PATTERNS,
            # huggingface-hub's own bars on a terminal (or none), plain lines in a log
            tqdm_class=bar_class() if progress and bar_class() is not tqdm else None,
        )
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised if unknown
        raise classify(exc, repo_id, revision) from None
    return Path(path)


def check_disk(repo_id: str, dest: Path, revision: str | None, endpoint: str | None) -> None:
    """Refuse to start when the files still to fetch do not fit on dest's disk."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, repo_id, revision)
        if isinstance(error, OfflineError):
            return  # offline: the files may be in the cache already; snapshot_download decides
        raise error from None
    wanted = [s for s in info.siblings or [] if needed(s.rfilename)]
    names = {s.rfilename for s in wanted}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise DownloadError(
            f"{repo_id} has no config.json with safetensors weights; conversion supports "
            "LlamaForCausalLM checkpoints in safetensors (Llama 1/2, Code Llama, TinyLlama-style)."
        )
    need = sum(s.size or 0 for s in wanted)
    free = shutil.disk_usage(dest).free
    if need * DISK_MARGIN > free:
        raise DiskSpaceError(
            f"Not enough free disk space in {dest}: {repo_id} needs {need / 1e9:.1f} GB for its "
            f"checkpoint files but only {free / 1e9:.1f} GB is free. Free some space or pass "
            "--dest on a larger disk (converting and quantizing need room for the outputs too)."
        )


def needed(filename: str) -> bool:
    return any(fnmatch.fnmatch(filename, p) for p in NEEDED_PATTERNS)


class DiskSpaceError(DownloadError):
    pass


class OfflineError(DownloadError):
    pass


def classify(exc: Exception, repo_id: str, revision: str | None) -> DownloadError:
    """huggingface-hub / network exception -> a message that says what to do next."""
    import httpx2
    from huggingface_hub import errors

    rev = revision or "main"
    # Most specific first: GatedRepoError is a RepositoryNotFoundError.
    table: list[tuple[type[BaseException] | tuple[type[BaseException], ...], type[DownloadError], str]] = [
        (
            errors.HFValidationError,
            DownloadError,
            f"{repo_id!r} is neither an existing checkpoint directory nor a Hugging Face repo id "
            "(org/name). Check the path, or the repo's name on https://huggingface.co.",
        ),
        (
            errors.GatedRepoError,
            DownloadError,
            f"{repo_id} is a gated model and this account has no access yet. Open "
            f"https://huggingface.co/{repo_id}, accept its licence with your Hugging Face account, "
            "then log in here with `hf auth login` (or set HF_TOKEN to an access token) and run again.",
        ),
        (
            errors.RevisionNotFoundError,
            DownloadError,
            f"Revision {rev!r} of {repo_id} was not found. Check the branch, tag or commit name.",
        ),
        (
            errors.RepositoryNotFoundError,
            DownloadError,
            f"Repository {repo_id} was not found. Check the name (org/name); if it is private, log in "
            "with `hf auth login` or set HF_TOKEN.",
        ),
        (
            (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError, httpx2.ConnectError, httpx2.TimeoutException),
            OfflineError,
            f"Cannot reach the Hugging Face Hub and {repo_id} (revision {rev!r}) is not complete in the "
            "local cache. Check the network connection (and HF_HUB_OFFLINE), then run again: finished "
            "files are kept and the download resumes.",
        ),
    ]
    for types, kind, message in table:
        if isinstance(exc, types):
            return kind(message)
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return DiskSpaceError(
            "The disk filled up during the download. Free some space and run again; finished files are kept."
        )
    if isinstance(exc, errors.HfHubHTTPError):
        return DownloadError(
            f"The Hugging Face Hub refused the request for {repo_id} "
            f"(HTTP {exc.response.status_code}). Try again later."
        )
    raise exc
