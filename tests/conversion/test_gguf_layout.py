"""The GGUF file itself: tensors, metadata and vocabulary as llama.cpp's converter writes them.

Expectations are computed here from the checkpoint with an independent
reader and the rules of llama.cpp's convert_hf_to_gguf.py (shards sorted by
name, tensors sorted by name inside each shard, q/k rows interleaved per head,
1-D tensors F32, 2-D weights cast float32 -> float16), then compared with
what gguf's own reader finds in our file: names, order, shapes, types, bytes.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import sentencepiece as spm

from tests.tiny_llama import TinySpec, read_checkpoint, write_tiny_llama

GGUF_NAMES = {  # HF suffix -> GGUF name, per layer
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


def gguf_name(hf: str) -> str:
    if hf in TOP_NAMES:
        return TOP_NAMES[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def interleave_heads(w: np.ndarray, n_head: int) -> np.ndarray:
    """Row h*d + 2j + s of the result is row h*d + s*d/2 + j of w (d = rows per head)."""
    d = w.shape[0] // n_head
    src = [h * d + s * (d // 2) + j for h in range(n_head) for j in range(d // 2) for s in range(2)]
    return w[src]


def expected_tensors(hf_dir) -> list[tuple[str, np.ndarray]]:
    config = json.loads((hf_dir / "config.json").read_text())
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"]
    weights = read_checkpoint(hf_dir)
    order = sorted(index, key=lambda name: (index[name], name))
    out = []
    for hf in order:
        w = weights[hf]
        if hf.endswith("q_proj.weight"):
            w = interleave_heads(w, config["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            w = interleave_heads(w, config["num_key_value_heads"])
        out.append((gguf_name(hf), w.astype(np.float32 if w.ndim == 1 else np.float16)))
    return out


@pytest.mark.parametrize("checkpoint", ["tiny_llama_checkpoint", "bf16_checkpoint"])
def test_f16_tensors_are_exactly_llama_cpp_layout(request, converted, checkpoint):
    hf_dir = request.getfixturevalue(checkpoint)
    reader = gguf.GGUFReader(converted(hf_dir, "f16"))
    expected = expected_tensors(hf_dir)
    assert [t.name for t in reader.tensors] == [name for name, _ in expected]
    for t, (name, w) in zip(reader.tensors, expected, strict=True):
        want_type = gguf.GGMLQuantizationType.F32 if w.ndim == 1 else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == want_type, name
        assert tuple(int(n) for n in t.shape) == tuple(reversed(w.shape)), name  # GGUF lists ne0 first
        assert t.data.tobytes() == w.tobytes(), name
        assert t.data_offset % reader.alignment == 0


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents() if key in reader.fields else None


def test_llama_metadata(tiny_llama_checkpoint, tiny_llama_gguf):
    config = json.loads((tiny_llama_checkpoint / "config.json").read_text())
    reader = gguf.GGUFReader(tiny_llama_gguf)
    expected = {
        "general.architecture": "llama",
        "general.type": "model",
        "general.file_type": 1,
        "llama.block_count": config["num_hidden_layers"],
        "llama.context_length": 2048,
        "llama.embedding_length": config["hidden_size"],
        "llama.feed_forward_length": config["intermediate_size"],
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": config["hidden_size"] // 4,
        "llama.vocab_size": config["vocab_size"],
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    assert {k: field(reader, k) for k in expected} == expected
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config["rope_theta"])
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])


def test_vocabulary_is_sentencepiece(tiny_llama_checkpoint, tiny_llama_gguf):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_llama_checkpoint / "tokenizer.model"))
    reader = gguf.GGUFReader(tiny_llama_gguf)
    n = sp.vocab_size()
    assert field(reader, "tokenizer.ggml.tokens") == [sp.id_to_piece(i) for i in range(n)]
    assert field(reader, "tokenizer.ggml.scores") == pytest.approx([sp.get_score(i) for i in range(n)])
    types = field(reader, "tokenizer.ggml.token_type")
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    assert len(byte_ids) == 256 and all(types[i] == 6 for i in byte_ids)
    assert (types[0], types[1], types[2]) == (2, 3, 3)  # unknown, control, control
    assert types.count(1) == n - 259


def test_chat_template_is_carried(tmp_path, converted):
    hf_dir = write_tiny_llama(tmp_path / "chat", TinySpec(chat_template=CHAT_TEMPLATE))
    reader = gguf.GGUFReader(converted(hf_dir, "f16"))
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE


def test_tensors_beyond_tokenizer_are_padded(tmp_path, converted):
    """A config vocab larger than tokenizer.model (as in real repos) gets [PAD] tokens, like llama.cpp."""
    hf_dir = write_tiny_llama(tmp_path / "padded", TinySpec(vocab_size=640))
    reader = gguf.GGUFReader(converted(hf_dir, "f16"))
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 640 and tokens[-1] == "[PAD639]"
    assert field(reader, "tokenizer.ggml.token_type")[-1] == 5  # unused


def test_config_gaps_get_llama_config_defaults(tmp_path, converted):
    """Llama-2-7b-chat-hf's config.json has no rope_theta or head_dim; llama.cpp's converter reads it
    through transformers' LlamaConfig and so writes its defaults. We must write the same keys."""
    hf_dir = write_tiny_llama(tmp_path / "sparse", TinySpec())
    config = json.loads((hf_dir / "config.json").read_text())
    for key in ("rope_theta", "head_dim", "rms_norm_eps"):
        config.pop(key, None)
    (hf_dir / "config.json").write_text(json.dumps(config))
    reader = gguf.GGUFReader(converted(hf_dir, "f16"))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert field(reader, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert (field(reader, "llama.attention.key_length"), field(reader, "llama.attention.value_length")) == (
        head_dim,
        head_dim,
    )
