"""Tiny Llama checkpoints in Hugging Face layout, built from scratch for the tests.

Random but well-scaled numpy weights in sharded safetensors (written by hand:
8-byte header length, JSON header, raw little-endian data), a SentencePiece
tokenizer trained here on a small built-in corpus (Llama-style: unk=0, bos=1,
eos=2, byte fallback, so CJK and emoji go through byte tokens), and the JSON
files a real Llama repo carries. Also an independent safetensors reader, used
by the numpy reference forward pass, which must not share code with
conversion/.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CORPUS = """\
The quick brown fox jumps over the lazy dog near the river bank.
Llama models answer questions about science, history and cooking.
A small language model can run on an ordinary laptop without a GPU.
Weights are stored in shards, and each shard has a header and raw data.
Numbers like 2024, 3.14159 and 42 appear in many everyday sentences.
She sells sea shells by the sea shore; the shells she sells are surely seashells.
How much wood would a woodchuck chuck if a woodchuck could chuck wood?
Rotary embeddings rotate pairs of query and key features by position.
The café served crème brûlée, jalapeño salsa and a naïve piña colada.
def main(argv):\n    return 0  # code has indentation and symbols: {}, [], ()
Attention heads share keys and values when grouped query attention is used.
In the beginning the universe was created; this has made a lot of people angry.
Tokenizers split text into pieces; rare characters fall back to single bytes.
"""

STORAGE = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


@dataclass(frozen=True)
class TinySpec:
    """What varies between the test checkpoints."""

    dtype: str = "F16"  # F32, F16 or BF16 storage in the shards
    num_key_value_heads: int = 2  # < num_attention_heads: grouped query attention
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    chat_template: str | None = None
    shards: int = 2
    seed: int = 0
    # Row sizes stay multiples of 256 so that K-quants (Q4_K_M) really quantize.
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    vocab_size: int | None = None  # None: the tokenizer's size; larger pads like real repos
    # A piece added to the vocabulary (a user-defined symbol) that the model then always says:
    # a token of the test's choosing from real decoding. Needs untied embeddings.
    says: str | None = None


def train_tokenizer(vocab_size: int = 600, user_defined: tuple[str, ...] = ()) -> bytes:
    """A Llama-style SentencePiece BPE model (serialized), trained on CORPUS; `user_defined`
    pieces are added whole."""
    import sentencepiece as spm

    lines = CORPUS.splitlines() * 4
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        user_defined_symbols=list(user_defined),
    )
    return model.getvalue()


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """float32 weights named as transformers' LlamaForCausalLM names them."""
    rng = np.random.default_rng(seed)
    d, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm():  # not all ones, so a wrong or missing norm shows in the logits
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(vocab, d, 0.5)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = mat(d, d, 0.08)
        w[p + "self_attn.k_proj.weight"] = mat(kv, d, 0.08)
        w[p + "self_attn.v_proj.weight"] = mat(kv, d, 0.05)
        w[p + "self_attn.o_proj.weight"] = mat(d, d, 0.05)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = mat(ff, d, 0.05)
        w[p + "mlp.up_proj.weight"] = mat(ff, d, 0.05)
        w[p + "mlp.down_proj.weight"] = mat(d, ff, 0.04)
    w["model.norm.weight"] = norm()
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(vocab, d, 0.06)
    return w


def always_say(w: dict[str, np.ndarray], config: dict, token: int) -> None:
    """Bend the weights so that `token` has by far the highest logit after any input: residual
    dimension 0 carries a constant that no layer writes to, and only `token`'s output row reads it."""
    w["model.embed_tokens.weight"][:, 0] = 4.0
    for i in range(config["num_hidden_layers"]):
        w[f"model.layers.{i}.self_attn.o_proj.weight"][0, :] = 0.0
        w[f"model.layers.{i}.mlp.down_proj.weight"][0, :] = 0.0
    w["lm_head.weight"][:, 0] = 0.0
    w["lm_head.weight"][token, 0] = 8.0


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """One safetensors file; float32 arrays are stored as `dtype`."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = to_bf16_bits(arr) if dtype == "BF16" else arr.astype(STORAGE[dtype])
        raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for raw in blobs:
            f.write(raw)


def write_sharded(out: Path, weights: dict[str, np.ndarray], dtype: str, shards: int) -> None:
    names = list(weights)
    groups = [names[i::shards] for i in range(shards)]  # interleaved: order must not matter
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{shards:05d}.safetensors"
        write_safetensors(out / fname, {n: weights[n] for n in group}, dtype)
        weight_map.update({n: fname for n in group})
        total += sum(weights[n].size * np.dtype(STORAGE[dtype]).itemsize for n in group)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False))


def write_tiny_llama(out: Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a complete tiny Llama checkpoint in Hugging Face layout into `out`."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    model = train_tokenizer(user_defined=(spec.says,) if spec.says else ())
    (out / "tokenizer.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab_size = spec.vocab_size or sp.vocab_size()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "rope_scaling": None,
        "vocab_size": vocab_size,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[spec.dtype],
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
    }
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False})
    tok_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer",
        "clean_up_tokenization_spaces": False,
        "legacy": True,
    }
    if spec.chat_template is not None:
        tok_config["chat_template"] = spec.chat_template
    write_json(out / "tokenizer_config.json", tok_config)
    write_json(out / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    weights = random_weights(config, spec.seed)
    if spec.says:
        assert not spec.tie_word_embeddings, "always_say bends lm_head, which tied embeddings lack"
        always_say(weights, config, sp.PieceToId(spec.says))
    write_sharded(out, weights, spec.dtype, spec.shards)
    return out


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_tiny_chatml(out: Path) -> Path:
    """A tiny Llama whose vocabulary ends with ChatML's control tokens, with a ChatML chat template.

    Named like the directory `out`; a name with "phi3" in it makes llama.cpp give the control
    tokens the RSTRIP attribute (they eat the whitespace after them), as for Phi-3."""
    import sentencepiece as spm

    n = spm.SentencePieceProcessor(model_proto=train_tokenizer()).vocab_size()
    hf_dir = write_tiny_llama(out, TinySpec(vocab_size=n + 3, chat_template=CHATML))
    config_path = hf_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["added_tokens_decoder"] = {
        str(n): {"content": "<|im_start|>", "special": True},
        str(n + 1): {"content": "<|im_end|>", "special": True},
        str(n + 2): {"content": "<|endoftext|>", "special": True},  # llama.cpp's Phi-3 rules expect it
    }
    config_path.write_text(json.dumps(config))
    return hf_dir


def read_checkpoint(hf_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a sharded checkpoint as float32 (bf16 widened exactly)."""
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    tensors = {}
    for fname in sorted(set(index["weight_map"].values())):
        blob = (hf_dir / fname).read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + n])
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            a, b = meta["data_offsets"]
            arr = np.frombuffer(blob[8 + n + a : 8 + n + b], dtype=np.dtype(STORAGE[meta["dtype"]]).newbyteorder("<"))
            if meta["dtype"] == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = arr.astype(np.float32).reshape(meta["shape"])
    return tensors


@pytest.fixture(scope="session")
def tiny_llama_checkpoint(tmp_path_factory) -> Path:
    """A tiny fp16 Llama with grouped query attention, in Hugging Face layout."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama-hf"))


@pytest.fixture(scope="session")
def tiny_llama_gguf(tiny_llama_checkpoint, tmp_path_factory) -> Path:
    """That checkpoint converted by our own converter to an f16 GGUF (no chat template)."""
    from conversion.converter import convert

    out = tmp_path_factory.mktemp("tiny-llama-gguf") / "tiny-llama.f16.gguf"
    return convert(tiny_llama_checkpoint, out, outtype="f16", progress=False)
