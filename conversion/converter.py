"""convert: a Hugging Face checkpoint (Llama, BERT) -> a GGUF file, streamed.

The header (metadata and tensor infos) is built from config.json and the
safetensors headers, written first, then each tensor is read from its shard a
few rows at a time, encoded and appended. Peak memory is a couple of chunks
plus the vocabulary, whatever the model's size. What differs between architectures
(tensor names, hyperparameters, vocabulary) is in their own modules (architectures.py).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from conversion.architectures import Architecture, load_hparams
from conversion.errors import ConversionError
from conversion.files import atomic_output
from conversion.plan import OUTTYPES, Options, TensorPlan

CHUNK_BYTES = 16 << 20  # float32 bytes per read; bounds memory per tensor
# What reading a config or tokenizer file of an unexpected shape raises (a list where an object was
# expected, a string where a number was, a missing entry, a value that does not fit its GGUF type).
MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, struct.error, OverflowError)


def convert(
    hf_dir, out, outtype: str = "f16", force: bool = False, progress: bool = True, keep_pooler: bool = False
) -> Path:
    """Convert the checkpoint in `hf_dir` to the GGUF file `out`; return `out`.

    keep_pooler: a BERT reranker keeps its pooler (see bert.py); the file then differs from llama.cpp's.
    """
    hf_dir, out = Path(hf_dir), Path(out)
    if outtype not in OUTTYPES:
        raise ConversionError(f"Unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    try:
        writer, plans = prepare(hf_dir, outtype, Options(keep_pooler=keep_pooler))
    except MALFORMED as exc:  # a JSON file of the checkpoint holds something of an unexpected shape
        raise malformed(hf_dir, exc) from None
    check_space(out, sum(p.nbytes for p in plans))
    with atomic_output(out, force) as tmp:
        writer.write_header_to_file(path=tmp)
        try:
            writer.write_kv_data_to_file()  # values are packed only now: a number that is not one fails here
        except MALFORMED as exc:
            raise malformed(hf_dir, exc) from None
        writer.write_ti_data_to_file()
        try:
            write_data(writer, plans, progress)
        finally:
            writer.close()
    return out


def malformed(hf_dir: Path, exc: Exception) -> ConversionError:
    what = f"{type(exc).__name__}: {exc}"
    return ConversionError(f"A config or tokenizer file in {hf_dir} is not as its architecture has it ({what}).")


def prepare(hf_dir: Path, outtype: str, options: Options) -> tuple[gguf.GGUFWriter, list[TensorPlan]]:
    """The tensor plan and a writer holding the header's tensor infos and metadata; nothing written yet."""
    arch, hparams = load_hparams(hf_dir)
    if options.keep_pooler and arch.gguf_arch != gguf.MODEL_ARCH.BERT:
        raise ConversionError(f"keep_pooler applies to BERT rerankers only; {hf_dir} is {arch.name}.")
    plans = arch.module.plan_tensors(hf_dir, hparams, outtype, options)
    if not plans:
        raise ConversionError(f"No tensors found in the safetensors files of {hf_dir}.")
    writer = gguf.GGUFWriter(path=None, arch=arch.name)
    for p in plans:
        writer.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    add_metadata(writer, arch, hf_dir, hparams, OUTTYPES[outtype][0], options)
    return writer, plans


def check_space(out: Path, need: int) -> None:
    """Fail before writing rather than when the disk fills up half-way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise ConversionError(
            f"Not enough free disk space for {out}: it needs {need / 1e9:.1f} GB and "
            f"{free / 1e9:.1f} GB is free. Free some space or choose another --out folder."
        )


def add_metadata(
    writer: gguf.GGUFWriter,
    arch: Architecture,
    hf_dir: Path,
    hparams: dict,
    ftype: gguf.LlamaFileType,
    options: Options,
) -> None:
    """general.*, <arch>.* and tokenizer.* keys, in llama.cpp's converter's order."""
    total, shared, expert, n_expert = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, hf_dir, cached_repo_name(hf_dir), total)
    if meta.name is None:
        meta.name = hf_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    arch.module.add_parameters(writer, hf_dir, hparams, ftype, options)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    arch.module.add_vocab(writer, hf_dir, hparams)


def cached_repo_name(hf_dir: Path) -> str | None:
    """The repo's name for a Hugging Face cache snapshot (.../models--org--name/snapshots/<commit>).

    Without it the name would be guessed from the folder name, a commit hash.
    """
    repo = hf_dir.resolve().parent.parent.name
    if hf_dir.resolve().parent.name == "snapshots" and repo.startswith("models--"):
        return repo.split("--")[-1]
    return None


def write_data(writer: gguf.GGUFWriter, plans: list[TensorPlan], progress: bool) -> None:
    """Stream each tensor's encoded rows after the header, padded like GGUFWriter pads."""
    assert writer.fout is not None  # the caller opened the output file
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    total = sum(p.nbytes for p in plans)
    with tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress) as bar:
        for p in plans:
            written = 0
            for rows in read_chunks(p):
                data = p.encode(rows)
                data.tofile(fout)
                written += data.nbytes
                bar.update(data.nbytes)
            if written != p.nbytes:
                raise ConversionError(f"internal error: {p.name} wrote {written} bytes, planned {p.nbytes}")
            writer.write_padding(fout, written)
        fout.flush()


def read_chunks(p: TensorPlan):
    src = p.source
    if len(src.shape) <= 1:
        yield src.read()
        return
    align = p.head_rows or 1  # a permuted tensor is cut between heads only
    per_chunk = max(align, CHUNK_BYTES // (src.row_elems * 4) // align * align)
    for start in range(0, src.n_rows, per_chunk):
        yield src.read_rows(start, min(per_chunk, src.n_rows - start))
