"""quantize: llama.cpp's own quantizer, through llama-cpp-python's C API.

llama_model_quantize writes the output itself; we point it at OUT.partial and
rename when it returns success. It reports nothing to Python while it works,
so the progress bar follows the size of the growing temporary file.
"""

from __future__ import annotations

import threading
from pathlib import Path

from conversion.errors import ConversionError
from conversion.files import atomic_output
from conversion.progress import bar_class

# Types that need no importance matrix; the name is the suffix of LLAMA_FTYPE_MOSTLY_*.
QUANT_TYPES = (
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "F16",
    "BF16",
)


def ftype_of(qtype: str) -> int:
    import llama_cpp

    name = qtype.upper()
    if name not in QUANT_TYPES:
        raise ConversionError(f"Unknown quantization type {qtype!r}; choose one of: {', '.join(QUANT_TYPES)}.")
    return getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")


def quantize(
    src, out, qtype: str = "Q4_K_M", threads: int | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Quantize the GGUF `src` into `out` with llama.cpp; return `out`."""
    import llama_cpp
    from llama_cpp._logger import set_verbose

    src, out = Path(src), Path(out)
    ftype = ftype_of(qtype)
    if not src.is_file():
        raise ConversionError(f"Input GGUF {src} does not exist.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or 0  # 0: all cores
    set_verbose(False)  # llama.cpp logs every tensor at info level; errors still show
    with atomic_output(out, force) as tmp:
        with SizeProgress(tmp, src.stat().st_size, f"quantize {qtype.upper()}", progress):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise ConversionError(
                f"llama.cpp could not quantize {src} to {qtype} (code {rc}); is it a complete GGUF file from `convert`?"
            )
    return out


class SizeProgress:
    """A tqdm bar fed by polling a file's size from a thread."""

    def __init__(self, path: Path, input_size: int, desc: str, enabled: bool):
        self.path, self.enabled = path, enabled
        self.bar = bar_class()(total=None, unit="B", unit_scale=True, desc=desc, disable=not enabled)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        while not self.done.wait(0.5):
            self.update()

    def update(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        self.bar.update(size - self.bar.n)

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.enabled:
            self.thread.join()
            self.update()
        self.bar.close()
