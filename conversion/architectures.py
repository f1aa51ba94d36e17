"""The architectures the converter knows: one module each, looked up by config.json's `architectures`.

Each module (llama.py, bert.py) gives the same five things: the Hugging Face class names
it takes, the config keys it needs and the defaults transformers' config class would fill
in, its tensor plan, its hyperparameter keys and its vocabulary keys. converter.py does the
rest (header, metadata shared by all, streaming the data) the same way for every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gguf

from conversion import bert, llama
from conversion.checkpoint import load_json
from conversion.errors import ConversionError


@dataclass(frozen=True)
class Architecture:
    gguf_arch: gguf.MODEL_ARCH
    module: ModuleType  # HF_NAMES, DESCRIPTION, REQUIRED, with_config_defaults, plan_tensors, add_parameters, add_vocab

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]


ARCHITECTURES = (Architecture(gguf.MODEL_ARCH.LLAMA, llama), Architecture(gguf.MODEL_ARCH.BERT, bert))
BY_HF_NAME = {hf: arch for arch in ARCHITECTURES for hf in arch.module.HF_NAMES}


def supported_text() -> str:
    return "; ".join(arch.module.DESCRIPTION for arch in ARCHITECTURES)


def load_hparams(hf_dir: Path) -> tuple[Architecture, dict]:
    """The checkpoint's architecture and its config.json with that architecture's defaults."""
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory; expected a Hugging Face checkpoint folder.")
    hparams = load_json(hf_dir / "config.json")
    hf_name = (hparams.get("architectures") or [None])[0]
    arch = BY_HF_NAME.get(hf_name)
    if arch is None:
        raise ConversionError(
            f"Unsupported architecture {hf_name!r} in {hf_dir / 'config.json'}. Supported: {supported_text()}."
        )
    for key in arch.module.REQUIRED:
        if key not in hparams:
            raise ConversionError(f"config.json in {hf_dir} lacks {key!r}; is it a complete {arch.name} config?")
    return arch, arch.module.with_config_defaults(hparams)
