"""An independent numpy forward pass of a Hugging Face BERT, straight from the architecture.

Written from transformers' BertModel semantics (word + position + token type embeddings,
LayerNorm, post-norm encoder layers with bidirectional multi-head attention and an erf GELU
feed-forward), on the checkpoint's own weights, in float64. It shares nothing with
conversion/. On top: sentence-transformers' mean pooling and Normalize (all-MiniLM-L6-v2),
and BertForSequenceClassification's head (pooler dense + tanh on [CLS], then classifier).
"""

from __future__ import annotations

import numpy as np

# Abramowitz & Stegun 7.1.26: erf to within 1.5e-7, far below what f16 weights change
A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
P = 0.3275911


def erf(x: np.ndarray) -> np.ndarray:
    t = 1.0 / (1.0 + P * np.abs(x))
    poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def gelu_llama_cpp(x: np.ndarray) -> np.ndarray:
    """llama.cpp's CPU GELU: the tanh approximation, looked up in a table by the input rounded to
    fp16 and giving an fp16 value (ggml-cpu's vec.h). Differs from the erf GELU by up to ~1e-3."""
    h = x.astype(np.float16).astype(np.float32)
    y = 0.5 * h * (1.0 + np.tanh(np.float32(0.7978845608) * h * (1.0 + np.float32(0.044715) * h * h)))
    return np.where(x <= -10.0, 0.0, np.where(x >= 10.0, x, y.astype(np.float16).astype(np.float64)))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def linear(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def attention(x: np.ndarray, w: dict, p: str, n_head: int) -> np.ndarray:
    seq, d = x.shape
    head_dim = d // n_head

    def heads(t):
        return t.reshape(seq, n_head, head_dim).transpose(1, 0, 2)

    q, k, v = (heads(linear(x, w, p + f"attention.self.{part}")) for part in ("query", "key", "value"))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)  # no mask: every token sees every token
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    return linear((probs @ v).transpose(1, 0, 2).reshape(seq, d), w, p + "attention.output.dense")


def hidden_states(weights: dict, cfg: dict, ids: list[int], token_types: list[int], act=gelu) -> np.ndarray:
    """The last layer's states (seq, hidden) for one sequence of token ids (`act`: the FFN's GELU)."""
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in weights.items()}
    eps = cfg.get("layer_norm_eps", 1e-12)
    e = "embeddings."
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][: len(ids)]
    x = x + w[e + "token_type_embeddings.weight"][token_types]
    x = layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        x = x + attention(x, w, p, cfg["num_attention_heads"])
        x = layer_norm(x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        h = linear(act(linear(x, w, p + "intermediate.dense")), w, p + "output.dense")
        x = layer_norm(x + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x


def sentence_embedding(weights: dict, cfg: dict, ids: list[int]) -> np.ndarray:
    """sentence-transformers' Transformer -> Pooling(mean) -> Normalize, for one unpadded input."""
    pooled = hidden_states(weights, cfg, ids, [0] * len(ids)).mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def rerank_score(
    weights: dict, cfg: dict, ids: list[int], token_types: list[int], pooler: bool = True, act=gelu
) -> np.ndarray:
    """BertForSequenceClassification's logits; pooler=False skips the pooler (dense + tanh) on [CLS]."""
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in weights.items()}
    cls = hidden_states(weights, cfg, ids, token_types, act)[0]
    if pooler:
        cls = np.tanh(linear(cls, w, "pooler.dense"))
    return linear(cls, w, "classifier")
