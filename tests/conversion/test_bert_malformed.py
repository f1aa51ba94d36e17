"""Odd config and tokenizer files in a BERT checkpoint: converted, or refused with a message, never a traceback.

Hypothesis writes any JSON into one of the files the BERT converter reads (or into one key of
config.json) of the tiny reranker; convert must then either succeed or raise ConversionError,
and a refusal leaves no output file behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversion.converter import convert
from conversion.errors import ConversionError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FILES = ["modules.json", "1_Pooling/config.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"]
CONFIG_KEYS = ["id2label", "num_labels", "layer_norm_eps", "type_vocab_size", "hidden_size", "num_hidden_layers"]
POOLING_MODULES = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
counter = itertools.count()


def checkpoint_copy(src, dest):
    dest.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "model.safetensors":
            os.link(p, dest / p.name)  # read only: shared, not copied
        else:
            shutil.copy(p, dest / p.name)
    (dest / "modules.json").write_text(json.dumps(POOLING_MODULES))
    (dest / "1_Pooling").mkdir()
    (dest / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    return dest


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(FILES + CONFIG_KEYS), value=JSON)
def test_any_json_is_converted_or_refused_cleanly(tmp_path, tiny_reranker_checkpoint, target, value):
    hf_dir = checkpoint_copy(tiny_reranker_checkpoint, tmp_path / f"case{next(counter)}")
    if target in CONFIG_KEYS:
        config = json.loads((hf_dir / "config.json").read_text())
        config[target] = value
        (hf_dir / "config.json").write_text(json.dumps(config))
    else:
        (hf_dir / target).write_text(json.dumps(value))
    out = hf_dir / "out.gguf"
    try:
        convert(hf_dir, out, "f32", progress=False)
    except ConversionError as exc:
        assert str(exc) and not out.exists()
