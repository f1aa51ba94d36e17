"""verify: load a GGUF with llama.cpp, report what it is, and generate a few tokens."""

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
    """Load `path` with llama-cpp-python and generate `n_tokens` greedily; raise ConversionError on failure."""
    import llama_cpp

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist.")
    try:
        llm = llama_cpp.Llama(str(path), n_ctx=256, n_batch=64, verbose=False)
    except (ValueError, RuntimeError):
        raise ConversionError(f"llama.cpp could not load {path}; it is not a complete, supported GGUF model.") from None
    try:
        meta = llm.metadata
        arch = meta.get("general.architecture", "unknown")
        out = llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0)
        completion = out["choices"][0]["text"]
        return Report(
            path=path,
            architecture=arch,
            n_params=llama_cpp.llama_model_n_params(llm.model),
            quantization=file_type_name(meta.get("general.file_type")),
            size_bytes=path.stat().st_size,
            context_length=int(meta.get(f"{arch}.context_length", 0)),
            has_chat_template="tokenizer.chat_template" in meta,
            sample=completion,
        )
    finally:
        llm.close()
