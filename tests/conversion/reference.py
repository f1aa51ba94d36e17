"""An independent numpy forward pass of a Hugging Face Llama, straight from the architecture.

Written from transformers' LlamaForCausalLM semantics (RMSNorm, rotary
embeddings in the rotate_half convention, grouped query attention, SwiGLU),
on the checkpoint's own weights, in float64. It shares nothing with
conversion/: a wrong q/k permutation, head grouping or norm in the converter
shows up as a logit mismatch against this.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x: np.ndarray, theta: float) -> np.ndarray:
    """x: (heads, seq, head_dim) -> rotated, HF convention (first half pairs with second half)."""
    head_dim, seq = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    freqs = np.outer(np.arange(seq, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def attention(h: np.ndarray, w: dict, p: str, cfg: dict) -> np.ndarray:
    seq = h.shape[0]
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg["hidden_size"] // n_head
    q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(seq, n_head, head_dim).transpose(1, 0, 2)
    k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
    v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
    q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
    group = n_head // n_kv  # query head i reads key/value head i // group
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)
    scores = np.where(np.tril(np.ones((seq, seq), dtype=bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(1, 0, 2).reshape(seq, n_head * head_dim)
    return out @ w[p + "self_attn.o_proj.weight"].T


def swiglu(h: np.ndarray, w: dict, p: str) -> np.ndarray:
    gate = h @ w[p + "mlp.gate_proj.weight"].T
    up = h @ w[p + "mlp.up_proj.weight"].T
    return (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T


def forward(weights: dict[str, np.ndarray], cfg: dict, tokens: list[int]) -> np.ndarray:
    """Logits (seq, vocab) for `tokens`, every position."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    eps = cfg["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = x + attention(rms_norm(x, w[p + "input_layernorm.weight"], eps), w, p, cfg)
        x = x + swiglu(rms_norm(x, w[p + "post_attention_layernorm.weight"], eps), w, p)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])  # tied when absent
    return x @ head.T
