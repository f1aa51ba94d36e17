"""The steps as the command line runs them: skip what is already done, then summarize.

A step whose output already exists as a complete GGUF of the requested type
is skipped; any other file at the output path is left alone unless --force.
`run_all` chains download (or a local folder), convert, quantize and verify.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from conversion.errors import OutputExistsError


@dataclass(frozen=True)
class StepResult:
    path: Path
    seconds: float
    skipped: bool = False

    def summary(self, step: str) -> str:
        from conversion.files import human_size

        what = "already done, skipped (--force redoes it)" if self.skipped else f"{self.seconds:.1f} s"
        return f"{step}: {self.path}  {human_size(self.path.stat().st_size)}  {what}"


def gguf_file_type(path: Path) -> int | None:
    """general.file_type of a complete GGUF file, or None if the file is not one."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        last = max(reader.tensors, key=lambda t: t.data_offset)
        if last.data_offset + last.n_bytes > path.stat().st_size:
            return None
        return int(reader.fields["general.file_type"].contents())
    except Exception:  # noqa: BLE001 - any parse failure means "not a complete GGUF"
        return None


def needs_run(out: Path, ftype: int, force: bool) -> bool:
    """True to run the step; False when its output is already there."""
    if force or not out.exists():
        return True
    if gguf_file_type(out) == ftype:
        return False
    raise OutputExistsError(
        f"{out} already exists and is not a complete GGUF of the requested type; not overwriting "
        "it. Pass --force to replace it, or choose another --out path."
    )


def run_step(out: Path, ftype: int, force: bool, fn, *args, **kwargs) -> StepResult:
    if not needs_run(out, ftype, force):
        return StepResult(out, 0.0, skipped=True)
    started = time.monotonic()
    fn(*args, **kwargs, force=True)  # needs_run has already applied the --force policy
    return StepResult(out, time.monotonic() - started)


def convert_step(
    hf_dir: Path, out: Path, outtype: str, force: bool, progress: bool = True, keep_pooler: bool = False
) -> StepResult:
    from conversion.converter import convert
    from conversion.plan import OUTTYPES

    ftype = int(OUTTYPES[outtype][0])
    return run_step(out, ftype, force, convert, hf_dir, out, outtype, progress=progress, keep_pooler=keep_pooler)


def quantize_step(
    src: Path, out: Path, qtype: str, threads: int | None, force: bool, progress: bool = True
) -> StepResult:
    from conversion.quantizer import ftype_of, quantize

    return run_step(out, ftype_of(qtype), force, quantize, src, out, qtype, threads, progress=progress)


def f16_path(out: Path, qtype: str) -> Path:
    """models/x.Q4_K_M.gguf -> models/x.f16.gguf (the intermediate file)."""
    stem = out.name.removesuffix(".gguf")
    stem = stem[: -len(qtype) - 1] if stem.upper().endswith("." + qtype.upper()) else stem
    return out.with_name(f"{stem}.f16.gguf")


def run_all(
    source: str,
    out: Path,
    qtype: str,
    keep_f16: bool,
    force: bool,
    dest: Path | None,
    threads: int | None = None,
    log=print,
) -> StepResult:
    from conversion.files import output_lock
    from conversion.verifier import verify

    started = time.monotonic()
    with output_lock(out):  # a second run for the same output refuses now, not after its download
        hf_dir = Path(source).expanduser()
        if not hf_dir.is_dir():
            from huggingface_hub import constants

            from conversion.downloader import download

            hf_dir = download(source, dest or constants.HF_HUB_CACHE)
            log(f"download: {hf_dir}")
        f16 = f16_path(out, qtype)
        log(convert_step(hf_dir, f16, "f16", force).summary("convert"))
        log(quantize_step(f16, out, qtype, threads, force).summary("quantize"))
        for line in verify(out).lines():
            log(line)
        if not keep_f16:
            f16.unlink(missing_ok=True)
    return StepResult(out, time.monotonic() - started)
