"""The shared tiny-Llama fixtures: a real checkpoint that our converter turns into a loadable GGUF."""

import json

import gguf


def test_checkpoint_is_sharded_hf_layout(tiny_llama_checkpoint):
    index = json.loads((tiny_llama_checkpoint / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2
    assert all((tiny_llama_checkpoint / s).is_file() for s in shards)
    config = json.loads((tiny_llama_checkpoint / "config.json").read_text())
    assert config["num_key_value_heads"] < config["num_attention_heads"]


def test_gguf_has_no_chat_template(tiny_llama_gguf):
    reader = gguf.GGUFReader(tiny_llama_gguf)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert "tokenizer.chat_template" not in reader.fields
    assert len(reader.tensors) == 2 + 2 * 9 + 1
