"""Pulling GGUF models from the Hugging Face Hub into its cache (shared with `llama-server -hf`).

`hf.co/USER/REPO:QUANT` picks the repo's GGUF whose name carries the quant tag (any case,
Q4_K_M by default; a model split into `-00001-of-0000N` shards is fetched whole);
`USER/REPO/FILE.gguf` names one file. huggingface-hub finds the files, their hashes and
their URLs (token included); the bytes are streamed in 1 MiB chunks into the cache's layout, at
`blobs/<sha256>.incomplete` until whole, so a pull cut by a disconnect or a kill resumes
where it stopped and never leaves a file that looks complete (huggingface-hub's own
hf_hub_download discards a cut download); progress is read from that file's size, so
every pull of the same file, in this process or another, reports the one download. Each file
is checked against the sha256 the Hub's LFS metadata gives before it is renamed into
place. The disk's free space is checked before anything is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from server.errors import ModelNotFound, ServerError
from server.library.catalog import Catalog, quant_of
from server.library.names import PullRef

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SHARD_STEM = re.compile(r"-\d{5}-of-\d{5}$")
CHUNK = 1 << 20
PROGRESS_EVERY = 0.1  # seconds between progress reports (Ollama: at most every 100 ms)
DISK_MARGIN = 1.02


class PullError(ServerError):
    """The Hub refused, or the files cannot be fetched or stored; the message says why."""

    status, type = 502, "pull_failed"


class GatedRepo(PullError):
    status, type = 403, "gated_repo"


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # from the Hub's LFS metadata


@dataclass(frozen=True)
class PullPlan:
    repo_id: str
    revision: str
    files: tuple[RemoteFile, ...]  # the model's file, or its shards in order


@dataclass(frozen=True)
class Progress:
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if v is not None}


def plan(ref: PullRef, endpoint: str | None = None, token: str | None = None) -> PullPlan:
    """Which files of the repo make the model `ref` names."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(ref.repo_id, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise classify(exc, ref.repo_id) from None
    files = [
        RemoteFile(s.rfilename, int(s.size or 0), getattr(s.lfs, "sha256", None) if s.lfs else None)
        for s in info.siblings or []
        if s.rfilename.lower().endswith(".gguf")
    ]
    chosen = _choose(ref, files)
    return PullPlan(ref.repo_id, str(info.sha), tuple(chosen))


def _choose(ref: PullRef, files: list[RemoteFile]) -> list[RemoteFile]:
    if ref.filename is not None:
        found = [f for f in files if f.name == ref.filename]
        if not found:
            raise ModelNotFound(f"{ref.repo_id} has no file {ref.filename}")
        return _with_shards(found[0], files)
    models = [f for f in files if "mmproj" not in Path(f.name).name.lower()]
    tag = (ref.quant or "Q4_K_M").upper()
    matching = [f for f in models if quant_of(f.name) == tag or tag in Path(f.name).name.upper()]
    if not matching:
        quants = sorted({q for f in models if (q := quant_of(f.name))})
        have = ", ".join(quants) if quants else "no GGUF files"
        raise ModelNotFound(f"{ref.repo_id} has no {tag} GGUF; it has: {have}")
    first = sorted(matching, key=lambda f: f.name)[0]
    return _with_shards(first, files)


def _with_shards(first: RemoteFile, files: list[RemoteFile]) -> list[RemoteFile]:
    """A file and, when it is one shard of a split model, all its shards in order."""
    match = _SHARD.search(first.name)
    if not match:
        return [first]
    stem, count = first.name[: match.start()], int(match.group(2))
    names = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    by_name = {f.name: f for f in files}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise PullError(f"the split model is incomplete on the Hub: {missing[0]} is missing")
    return [by_name[n] for n in names]


def classify(exc: Exception, repo_id: str) -> ServerError:
    """huggingface-hub's errors as one clear message each."""
    from huggingface_hub import errors

    name = type(exc).__name__
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code in (401, 403):
            return GatedRepo(f"{repo_id}: the Hub refused the download ({exc.code}): accept its licence, set HF_TOKEN")
        return PullError(f"the Hub answered {exc.code} for a file of {repo_id}")
    if isinstance(exc, (urllib.error.URLError, OSError)) and not isinstance(exc, errors.HfHubHTTPError):
        return PullError(f"cannot reach the Hub for {repo_id}: {' '.join(str(exc).split())[:200]}")
    if isinstance(exc, errors.GatedRepoError):
        return GatedRepo(f"{repo_id} is gated: accept its licence on Hugging Face and set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ModelNotFound(f"no repository {repo_id} on the Hub (or it is private: set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return ModelNotFound(f"{repo_id} has no such revision")
    if isinstance(exc, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)) or "Connect" in name:
        return PullError(f"cannot reach the Hub for {repo_id}: {' '.join(str(exc).split())[:200]}")
    return PullError(f"pulling {repo_id} failed: {name}: {' '.join(str(exc).split())[:200]}")


def check_disk(pull: PullPlan, cache: Path) -> None:
    """Refuse before writing when what is still to fetch does not fit on the cache's disk."""
    repo = cache / ("models--" + pull.repo_id.replace("/", "--"))
    needed = sum(f.size - _have(repo, f) for f in pull.files)
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if needed * DISK_MARGIN > free:
        raise PullError(f"not enough disk space: {needed >> 20} MiB to fetch, {free >> 20} MiB free in {cache}")


def _have(repo: Path, f: RemoteFile) -> int:
    """Bytes of `f` already in the cache (whole, or the start of a resumable download)."""
    if f.sha256 is None:
        return 0
    blob = repo / "blobs" / f.sha256
    if blob.is_file():
        return f.size
    partial = blob.with_name(blob.name + ".incomplete")
    return partial.stat().st_size if partial.is_file() else 0


def fetch(
    pull: PullPlan,
    cache: Path,
    report: Callable[[Progress], None],
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download (or find) every file of `pull`, reporting progress; the first file's path."""
    check_disk(pull, cache)
    repo = cache / ("models--" + pull.repo_id.replace("/", "--"))
    paths = [_fetch_one(pull, f, repo, cache, report, endpoint, token) for f in pull.files]
    report(Progress("verifying sha256 digest"))  # each file was checked as it completed, before it was renamed
    return paths[0]


def _fetch_one(
    pull: PullPlan,
    f: RemoteFile,
    repo: Path,
    cache: Path,
    report: Callable[[Progress], None],
    endpoint: str | None,
    token: str | None,
) -> Path:
    digest = f"sha256:{f.sha256}" if f.sha256 else f"sha256:{hashlib.sha256(f.name.encode()).hexdigest()}"
    status = f"pulling {digest[7:19]}"
    outcome: dict[str, object] = {}

    def download() -> None:
        try:
            outcome["path"] = _download(pull, f, repo, endpoint, token)
        except Exception as exc:  # noqa: BLE001 - told to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=download, name="pull", daemon=True)
    worker.start()
    while worker.is_alive():
        report(Progress(status, digest, f.size, min(_have(repo, f), f.size)))
        worker.join(PROGRESS_EVERY)
    if "error" in outcome:
        error = outcome["error"]
        raise error if isinstance(error, ServerError) else classify(error, pull.repo_id)  # type: ignore[arg-type]
    report(Progress(status, digest, f.size, f.size))
    return Path(str(outcome["path"]))


def _download(pull: PullPlan, f: RemoteFile, repo: Path, endpoint: str | None, token: str | None) -> Path:
    """One file into the cache's layout: `blobs/<sha256>.incomplete`, resumed from where an
    earlier pull stopped, checked, renamed to `blobs/<sha256>`, linked from the snapshot.
    A lock per blob makes a second pull of the same file wait for the first (and find it whole)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    name = f.sha256 or hashlib.sha256(f"{pull.revision}/{f.name}".encode()).hexdigest()
    blobs, link = repo / "blobs", repo / "snapshots" / pull.revision / f.name
    blob, partial = blobs / name, blobs / f"{name}.incomplete"
    blobs.mkdir(parents=True, exist_ok=True)
    with open(blobs / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not blob.is_file():
            url = hf_hub_url(pull.repo_id, f.name, revision=pull.revision, endpoint=endpoint)
            _transfer(url, partial, f.size, build_hf_headers(token=token))
            _verify(f, partial)
            os.replace(partial, blob)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(os.path.relpath(blob, link.parent), link)
        refs = repo / "refs" / "main"
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(pull.revision)
    return link


def _transfer(url: str, partial: Path, size: int, headers: dict[str, str]) -> None:
    """Append the bytes `partial` lacks, asking for the rest with a Range header; each chunk is
    written as it comes, so a cut leaves every byte received for the next pull to resume from."""
    have = partial.stat().st_size if partial.is_file() else 0
    if have >= size > 0:
        return
    request = urllib.request.Request(url, headers={**headers, "Range": f"bytes={have}-"} if have else headers)
    with urllib.request.urlopen(request, timeout=60) as response, open(partial, "ab") as out:
        if have and response.status == 200:  # the server ignored the Range: start again
            out.truncate(0)
        while chunk := response.read(CHUNK):
            out.write(chunk)
            out.flush()
    got = partial.stat().st_size
    if got != size:
        raise PullError(f"the download ended at {got} of {size} bytes; pull again to resume")


def _verify(f: RemoteFile, path: Path) -> None:
    """The downloaded file's sha256 against the Hub's; one that does not match is removed (a
    resumed download could otherwise never recover from bad bytes)."""
    if f.sha256 is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != f.sha256:
        path.unlink(missing_ok=True)
        raise PullError(f"{f.name}: sha256 {digest.hexdigest()} does not match the Hub's {f.sha256}; removed")


def pull_model(
    ref: PullRef,
    catalog: Catalog,
    report: Callable[[Progress], None],
    force: bool = False,
    endpoint: str | None = None,
) -> str:
    """Pull `ref` into the catalog's cache and return the name it is served by. A name that
    another model of the library already has is refused unless `force`."""
    report(Progress("pulling manifest"))
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    pull = plan(ref, endpoint)
    name = Path(pull.files[0].name).name.removesuffix(".gguf")
    name = _SHARD_STEM.sub("", name)
    catalog.scan()
    existing = catalog._lookup(name)
    if existing is not None and existing.repo != pull.repo_id and not force:
        raise NameTaken(f"a model named '{name}' exists already ({existing.source}); pull with force to add this one")
    path = fetch(pull, catalog.cache, report, endpoint)
    catalog.scan()
    found = catalog._lookup(f"{pull.repo_id}/{pull.files[0].name}")
    report(Progress("success"))
    return found.name if found is not None else path.name.removesuffix(".gguf")


class NameTaken(ServerError):
    status, type = 409, "model_exists"
