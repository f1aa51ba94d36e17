"""The conversion benchmark's own parts: the checkpoint it writes, how it measures, how it compares.

The benchmark itself runs for many minutes on a 13.5 GB checkpoint; these tests run
its pieces on real small files so that a wrong number cannot come from the harness.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Appended, not prepended: bench/conversion.py must never shadow the conversion package.
sys.path.append(str(BENCH))

import _checkpoint  # noqa: E402
from _gguf_summary import compare, summarize  # noqa: E402
from _measure import run_step  # noqa: E402

MB = 1 << 20


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    tokenizer = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    tokenizer.write_bytes(b"stand-in tokenizer bytes: the writer only copies this file")
    out = tmp_path_factory.mktemp("ckpt") / "llama"
    return _checkpoint.write_checkpoint(out, _checkpoint.PRESETS["tiny"], tokenizer)


def test_checkpoint_has_every_tensor_once_with_contiguous_data(tiny_checkpoint):
    shape = _checkpoint.PRESETS["tiny"]
    expected = dict(_checkpoint.tensor_shapes(shape))
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(expected)
    seen, total = {}, 0
    for shard in sorted(tiny_checkpoint.glob("*.safetensors")):
        header, data_start = _read_header(shard)
        assert data_start % 8 == 0
        header.pop("__metadata__")
        end = 0
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
            begin, stop = info["data_offsets"]
            assert begin == end and info["dtype"] == "F16"
            assert stop - begin == 2 * int(np.prod(info["shape"]))
            end = stop
            seen[name] = tuple(info["shape"])
            assert index["weight_map"][name] == shard.name
        assert shard.stat().st_size == data_start + end
        total += end
    assert seen == expected
    assert index["metadata"]["total_size"] == total
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (shape.hidden, shape.layers)


def test_checkpoint_weights_are_small_random_and_norms_near_one(tiny_checkpoint):
    shard = next(tiny_checkpoint.glob("*.safetensors"))
    header, start = _read_header(shard)
    raw = np.memmap(shard, dtype=np.uint8, mode="r")

    def tensor(name):
        a, b = header[name]["data_offsets"]
        return np.frombuffer(raw[start + a : start + b], dtype=np.float16).astype(np.float32)

    q = tensor("model.layers.0.self_attn.q_proj.weight")
    k = tensor("model.layers.0.self_attn.k_proj.weight")
    assert 0.015 < q.std() < 0.025 and abs(q.mean()) < 0.002
    assert not np.array_equal(q, k)  # each tensor starts elsewhere in the pool
    norm = tensor("model.layers.0.input_layernorm.weight")
    assert abs(norm.mean() - 1.0) < 0.01


def test_checkpoint_marker_matches_only_the_same_inputs(tiny_checkpoint):
    tokenizer = tiny_checkpoint / "tokenizer.model"
    tiny = _checkpoint.PRESETS["tiny"]
    assert _checkpoint.is_complete(tiny_checkpoint, tiny, tokenizer, seed=0)
    assert not _checkpoint.is_complete(tiny_checkpoint, tiny, tokenizer, seed=1)
    assert not _checkpoint.is_complete(tiny_checkpoint, _checkpoint.PRESETS["7b"], tokenizer, seed=0)


def test_seven_b_preset_matches_llama2_7b_size_and_two_shards():
    shapes = _checkpoint.tensor_shapes(_checkpoint.PRESETS["7b"])
    assert len(shapes) == 2 + 32 * 9 + 1
    # Llama-2-7b-hf's index says 13476839424 bytes; 8192 of those are rotary inv_freq
    # buffers that converters drop, so the benchmark does not write them.
    assert sum(2 * int(np.prod(s)) for _, s in shapes) == 13476839424 - 8192
    assert len(_checkpoint.shard_plan(shapes)) == 2


def _child(tmp_path: Path, mib: int) -> list[str]:
    code = f"b = bytearray({mib} * {MB}); b[::4096] = b'x' * len(b[::4096])"
    return [sys.executable, "-c", code]


def test_run_step_reports_each_childs_own_peak_rss(tmp_path):
    big = run_step("big", _child(tmp_path, 300), tmp_path / "big.log")
    small = run_step("small", _child(tmp_path, 1), tmp_path / "small.log")
    assert big.returncode == 0 and small.returncode == 0
    assert big.peak_rss_bytes > 300 * MB
    # An aggregate over children would still show the big one's peak here.
    assert small.peak_rss_bytes < 100 * MB
    assert big.wall_s > 0 and big.cpu_s > 0


def test_run_step_records_a_failing_exit_code(tmp_path):
    res = run_step("fails", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "f.log")
    assert res.returncode == 3
    assert "raise SystemExit(3)" in (tmp_path / "f.log").read_text()


def _write_gguf(path: Path, name: str, data: np.ndarray) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", data)
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_compare_passes_on_same_tensors_and_reports_a_name_difference(tmp_path):
    data = np.arange(64, dtype=np.float16).reshape(8, 8)
    a = summarize(_write_gguf(tmp_path / "a.gguf", "Ours", data))
    b = summarize(_write_gguf(tmp_path / "b.gguf", "Theirs", data))
    verdict = compare(a, b)
    assert verdict["verdict"] == "PASS" and verdict["tensors_identical"]
    assert not verdict["metadata_identical"]
    assert [d["key"] for d in verdict["metadata_differences"]] == ["general.name"]


def test_compare_fails_on_one_changed_value(tmp_path):
    data = np.arange(64, dtype=np.float16).reshape(8, 8)
    changed = data.copy()
    changed[3, 3] += 1
    a = summarize(_write_gguf(tmp_path / "a.gguf", "Same", data))
    b = summarize(_write_gguf(tmp_path / "b.gguf", "Same", changed))
    verdict = compare(a, b)
    assert verdict["verdict"] == "FAIL" and verdict["metadata_identical"]
    assert verdict["tensor_differences"][0]["tensor"] == "token_embd.weight"
    assert verdict["tensor_differences"][0]["differs_in"] == ["sha256"]
