"""convert: a Hugging Face Llama checkpoint -> a GGUF file, streamed.

The header (metadata and tensor infos) is built from config.json and the
safetensors headers, written first, then each tensor is read from its shard a
few rows at a time, encoded and appended. Peak memory is a couple of chunks
plus the vocabulary, whatever the model's size.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np

from conversion.errors import ConversionError
from conversion.files import atomic_output
from conversion.plan import OUTTYPES, TensorPlan, load_hparams, plan_tensors
from conversion.progress import bar_class
from conversion.vocab import add_vocab

CHUNK_BYTES = 16 << 20  # float32 bytes per read; bounds memory per tensor
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_ctx",
    "n_positions",
    "max_length",
    "max_sequence_length",
    "model_max_length",
)


def convert(hf_dir, out, outtype: str = "f16", force: bool = False, progress: bool = True) -> Path:
    """Convert the checkpoint in `hf_dir` to the GGUF file `out`; return `out`."""
    hf_dir, out = Path(hf_dir), Path(out)
    if outtype not in OUTTYPES:
        raise ConversionError(f"Unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    hparams = load_hparams(hf_dir)
    plans = plan_tensors(hf_dir, hparams, outtype)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    for p in plans:
        writer.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    add_metadata(writer, hf_dir, hparams, OUTTYPES[outtype][0])
    check_space(out, sum(p.nbytes for p in plans))
    with atomic_output(out, force) as tmp:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        try:
            write_data(writer, plans, progress)
        finally:
            writer.close()
    return out


def check_space(out: Path, need: int) -> None:
    """Fail before writing rather than when the disk fills up half-way."""
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise ConversionError(
            f"Not enough free disk space for {out}: it needs {need / 1e9:.1f} GB and "
            f"{free / 1e9:.1f} GB is free. Free some space or choose another --out folder."
        )


def add_metadata(writer: gguf.GGUFWriter, hf_dir: Path, hparams: dict, ftype: gguf.LlamaFileType) -> None:
    """general.*, llama.* and tokenizer.* keys, in llama.cpp's converter's order."""
    total, shared, expert, n_expert = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, hf_dir, cached_repo_name(hf_dir), total)
    if meta.name is None:
        meta.name = hf_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)
    add_llama_parameters(writer, hparams, ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocab(writer, hf_dir, hparams)


def cached_repo_name(hf_dir: Path) -> str | None:
    """The repo's name for a Hugging Face cache snapshot (.../models--org--name/snapshots/<commit>).

    Without it the name would be guessed from the folder name, a commit hash.
    """
    repo = hf_dir.resolve().parent.parent.name
    if hf_dir.resolve().parent.name == "snapshots" and repo.startswith("models--"):
        return repo.split("--")[-1]
    return None


def add_llama_parameters(writer: gguf.GGUFWriter, hp: dict, ftype: gguf.LlamaFileType) -> None:
    """TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters, for Llama configs."""
    writer.add_block_count(hp["num_hidden_layers"])
    if (n_ctx := first(hp, *CONTEXT_KEYS)) is not None:
        writer.add_context_length(n_ctx)
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    if (n_kv := hp.get("num_key_value_heads")) is not None:
        writer.add_head_count_kv(n_kv)
    rope = dict(hp.get("rope_parameters") or hp.get("rope_scaling") or {})
    if "rope_theta" not in rope and (theta := first(hp, "rope_theta", "rotary_emb_base")) is not None:
        rope["rope_theta"] = theta
    add_rope_scaling(writer, rope)
    if (theta := rope.get("rope_theta")) is not None:
        writer.add_rope_freq_base(theta)
    if (eps := first(hp, "rms_norm_eps", "norm_eps")) is not None:
        writer.add_layer_norm_rms_eps(eps)
    if (head_dim := hp.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_rope_dimension_count(head_dim or hp["hidden_size"] // hp["num_attention_heads"])


def add_rope_scaling(writer: gguf.GGUFWriter, rope: dict) -> None:
    kind = rope.get("rope_type", rope.get("type"))
    if kind in (None, "default", "dynamic"):  # dynamic NTK is a runtime choice in llama.cpp
        return
    if kind == "linear" and rope.get("factor") is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
        return
    raise ConversionError(f"RoPE scaling {kind!r} is not supported; supported: none or linear.")


def first(hp: dict, *keys: str):
    return next((hp[k] for k in keys if k in hp), None)


def write_data(writer: gguf.GGUFWriter, plans: list[TensorPlan], progress: bool) -> None:
    """Stream each tensor's encoded rows after the header, padded like GGUFWriter pads."""
    assert writer.fout is not None  # the caller opened the output file
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    total = sum(p.nbytes for p in plans)
    with bar_class()(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress) as bar:
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
