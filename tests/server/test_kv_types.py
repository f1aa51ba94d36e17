"""One table of KV cache types (settings.KV_CACHE_TYPES): the settings, the context parameters,
the memory plans and the settings page (docs/settings.md) all read it, and it agrees with ggml's own (gguf's) table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gguf
import pytest

from server.engine.decoder_types import DecoderConfig, context_params
from server.model.offload import ModelShape, kv_bytes_per_layer
from server.settings import KV_CACHE_TYPES, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(KV_CACHE_TYPES))
def test_settings_context_parameters_and_memory_plan_agree_with_ggml(name):
    ggml_type = gguf.GGMLQuantizationType[name.upper()]
    block, block_bytes = gguf.GGML_QUANT_SIZES[ggml_type]
    assert Settings(kv_cache_type=name, flash_attn="on").kv_cache_ggml_type == ggml_type.value
    params = context_params(DecoderConfig(type_k=name, type_v=name, flash_attn="on"))
    assert (params.type_k, params.type_v) == (ggml_type.value, ggml_type.value)
    shape = ModelShape(layer_bytes=(1,), output_bytes=0, n_embd=256, n_head=4, n_embd_kv=128, n_vocab=1000)
    assert kv_bytes_per_layer(shape, 64, name) == 2 * 64 * 128 * block_bytes // block  # K and V
    # Block-quantized types need flash attention (llama.cpp's rule for a quantized V cache).
    assert KV_CACHE_TYPES[name].quantized == (block > 1)
    if block > 1:
        with pytest.raises(SettingsError, match="LLAMA_SERVER_FLASH_ATTN"):
            Settings(kv_cache_type=name)
    else:
        assert Settings(kv_cache_type=name).kv_cache_type == name


def test_the_types_are_listed_once_in_the_server():
    """Only settings.py names them (the default "f16" aside): no second table to fall out of step."""
    names = set(KV_CACHE_TYPES) - {"f16"}
    found = {}
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.setdefault(str(path.relative_to(ROOT)), set()).add(node.value)
    assert list(found) == ["server/settings.py"], found


def test_the_settings_page_lists_exactly_the_table():
    page = (ROOT / "docs" / "settings.md").read_text().splitlines()
    row = next(line for line in page if line.startswith("- [`KV_CACHE_TYPE`]"))
    listed = re.search(r"element type: ([^(]+)\(", row).group(1)
    assert [t.strip() for t in listed.split(",")] == list(KV_CACHE_TYPES)
