"""verify: load a GGUF with llama.cpp, report what it is, and generate a few tokens.

An encoder (BERT: non-causal attention, a pooling type or a classifier head in its metadata)
generates nothing; it is loaded with embeddings on and its pooling instead, and its sample is
the pooled vector (or the rank score) of the prompt, which must be finite and not all zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conversion.errors import ConversionError


@dataclass(frozen=True)
class Report:
    path: Path
    architecture: str
    n_params: int
    quantization: str
    size_bytes: int
    context_length: int
    has_chat_template: bool
    sample: str

    def lines(self) -> list[str]:
        from conversion.files import human_size

        return [
            f"file:          {self.path}",
            f"architecture:  {self.architecture}",
            f"parameters:    {self.n_params:,}",
            f"quantization:  {self.quantization}",
            f"size:          {human_size(self.size_bytes)}",
            f"context:       {self.context_length}",
            f"chat template: {'yes' if self.has_chat_template else 'no'}",
            f"sample:        {self.sample!r}",
        ]


def file_type_name(value: str | None) -> str:
    import gguf

    if value is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(value)).name
    except (TypeError, ValueError):
        return "unknown"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def verify(path, prompt: str = "Hello", n_tokens: int = 8) -> Report:
    """Load `path` with llama-cpp-python and generate `n_tokens` greedily (or embed, for an encoder);
    raise ConversionError on failure."""
    import llama_cpp

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist.")
    meta = read_metadata(path)
    arch = meta.get("general.architecture", "unknown")
    pooling = encoder_pooling(meta, arch)
    try:
        if pooling is None:
            llm = llama_cpp.Llama(str(path), n_ctx=256, n_batch=64, verbose=False)
        else:
            n_ctx = min(512, int(meta.get(f"{arch}.context_length", 512)))
            llm = llama_cpp.Llama(
                str(path), embedding=True, pooling_type=pooling, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                verbose=False,
            )  # fmt: skip
    except (ValueError, RuntimeError):
        raise ConversionError(f"llama.cpp could not load {path}; it is not a complete, supported GGUF model.") from None
    try:
        if pooling is None:
            out = llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0)
            sample = out["choices"][0]["text"]
        else:
            sample = embed_sample(llm, prompt, path)
        return Report(
            path=path,
            architecture=arch,
            n_params=llama_cpp.llama_model_n_params(llm.model),
            quantization=file_type_name(meta.get("general.file_type")),
            size_bytes=path.stat().st_size,
            context_length=int(meta.get(f"{arch}.context_length", 0)),
            has_chat_template="tokenizer.chat_template" in meta,
            sample=sample,
        )
    finally:
        llm.close()


def read_metadata(path: Path) -> dict:
    """The GGUF's metadata values (arrays included), read without loading the model."""
    import gguf

    try:
        return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()}
    except Exception:  # noqa: BLE001 - any parse failure means "not a GGUF llama.cpp can load"
        raise ConversionError(f"llama.cpp could not load {path}; it is not a complete, supported GGUF model.") from None


def encoder_pooling(meta: dict, arch: str) -> int | None:
    """The pooling to embed with for an encoder model, or None for a model that generates.

    llama.cpp's converter records no pooling for a reranker (BertForSequenceClassification):
    its classifier labels say it scores, with pooling rank.
    """
    import llama_cpp

    if f"{arch}.pooling_type" in meta:
        return int(meta[f"{arch}.pooling_type"])
    if f"{arch}.classifier.output_labels" in meta:
        return llama_cpp.LLAMA_POOLING_TYPE_RANK
    if meta.get(f"{arch}.attention.causal") is False:
        return llama_cpp.LLAMA_POOLING_TYPE_MEAN
    return None


POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


def embed_sample(llm, prompt: str, path: Path) -> str:
    """The prompt's pooled output in one decode: a vector, or a rank head's scores."""
    import math

    import llama_cpp

    tokens = llm.tokenize(prompt.encode(), add_bos=True)
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):  # one sequence, every token an output (as embedding asks)
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(tokens)
        if llama_cpp.llama_decode(llm.ctx, batch) != 0:
            raise ConversionError(f"llama.cpp could not embed a prompt with {path}.")
    finally:
        llama_cpp.llama_batch_free(batch)
    pooling = llama_cpp.llama_pooling_type(llm.ctx)
    rank = pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
    n = llama_cpp.llama_model_n_cls_out(llm.model) if rank else llm.n_embd()
    ptr = llama_cpp.llama_get_embeddings_seq(llm.ctx, 0)
    values = [float(ptr[i]) for i in range(n)] if ptr else []
    if not values or not all(math.isfinite(v) for v in values) or not any(values):
        raise ConversionError(f"llama.cpp gave no usable embedding with {path}: {values[:4]}")
    what = f"{n} score{'s' * (n != 1)} (rank head)" if rank else f"{n} floats ({POOLING_NAMES.get(pooling)} pooling)"
    return f"{what}: " + ", ".join(f"{v:.4f}" for v in values[:4]) + (", ..." if n > 4 else "")
