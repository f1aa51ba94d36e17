"""The command line over real files: quantize, verify, the skip/--force policy, clear errors."""

from __future__ import annotations

import json
import re
import shutil

import gguf
import llama_cpp
import pytest

from conversion.cli import main
from conversion.converter import convert
from conversion.verifier import verify
from tests.tiny_llama import TinySpec, write_tiny_llama

QT = gguf.GGMLQuantizationType
# Which weight types each quantization must really produce (not a silent fallback).
EXPECTED_TYPES = {"Q4_K_M": {QT.Q4_K, QT.Q6_K}, "Q4_0": {QT.Q4_0}}


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q4_0"])
def test_quantized_files_load_and_generate(tmp_path, tiny_llama_gguf, qtype, capsys):
    out = tmp_path / f"tiny.{qtype}.gguf"
    assert main(["quantize", str(tiny_llama_gguf), "--out", str(out), "--type", qtype, "--threads", "2"]) == 0
    # It ran (a skipped step names the same path), and the file is of the type asked for.
    assert re.fullmatch(rf"quantize: {re.escape(str(out))}  \S+ \S+  [0-9.]+ s\n", capsys.readouterr().out)
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == gguf.LlamaFileType[f"MOSTLY_{qtype}"]
    types = {t.tensor_type for t in gguf.GGUFReader(out).tensors if len(t.shape) == 2}
    assert EXPECTED_TYPES[qtype] <= types
    assert out.stat().st_size < tiny_llama_gguf.stat().st_size / 2
    llm = llama_cpp.Llama(str(out), n_ctx=64, verbose=False)
    try:
        result = llm.create_completion("The quick brown", max_tokens=4, temperature=0.0)
        assert result["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_verify_reports_the_model(tiny_llama_gguf, capsys):
    assert main(["verify", str(tiny_llama_gguf)]) == 0
    report = capsys.readouterr().out
    for line in ("architecture:  llama", "quantization:  F16", "context:       2048", "chat template: no"):
        assert line in report
    assert "parameters:    1," in report  # ~1.5M parameters, printed with separators


def test_verify_sees_a_chat_template(tmp_path):
    hf_dir = write_tiny_llama(tmp_path / "chat", TinySpec(chat_template="{{ messages[0]['content'] }}"))
    report = verify(convert(hf_dir, tmp_path / "chat.gguf", progress=False))
    assert report.has_chat_template and report.architecture == "llama"


def test_verify_fails_on_a_broken_file(tmp_path, tiny_llama_gguf, capsys):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_llama_gguf.read_bytes()[:200_000])
    assert main(["verify", str(broken)]) != 0
    err = capsys.readouterr().err
    assert "could not load" in err and "Traceback" not in err


def test_unknown_quant_type_lists_the_supported_ones(tmp_path, tiny_llama_gguf, capsys):
    assert main(["quantize", str(tiny_llama_gguf), "--out", str(tmp_path / "x.gguf"), "--type", "Q3_XYZ"]) == 1
    err = capsys.readouterr().err
    assert "Q3_XYZ" in err and all(t in err for t in ("Q4_K_M", "Q4_0", "Q5_K_M", "Q8_0"))
    assert not (tmp_path / "x.gguf").exists()


def test_existing_outputs_are_skipped_or_protected(tmp_path, tiny_llama_checkpoint, capsys):
    out = tmp_path / "model.f16.gguf"
    args = ["convert", str(tiny_llama_checkpoint), "--out", str(out)]
    assert main(args) == 0
    first = out.stat().st_mtime_ns
    assert main(args) == 0  # complete output of the same type: skipped, untouched
    assert "skipped" in capsys.readouterr().out and out.stat().st_mtime_ns == first
    assert main(args[:-2] + ["--out", str(out), "--outtype", "f32"]) == 3  # same path, other type
    out.write_bytes(b"not a gguf")
    assert main(args) == 3
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"not a gguf"
    assert main(args + ["--force"]) == 0
    assert gguf.GGUFReader(out).fields["general.architecture"].contents() == "llama"


def test_unsupported_architecture_names_what_is_supported(tmp_path, tiny_llama_checkpoint, capsys):
    hf_dir = shutil.copytree(tiny_llama_checkpoint, tmp_path / "mistral")
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "architectures": ["GPTNeoXForCausalLM"]}))
    assert main(["convert", str(hf_dir), "--out", str(tmp_path / "x.gguf")]) == 1
    err = capsys.readouterr().err
    assert "GPTNeoXForCausalLM" in err and "LlamaForCausalLM" in err and "Traceback" not in err


@pytest.mark.parametrize("missing", ["tokenizer.model", "config.json", "model-00002-of-00002.safetensors"])
def test_missing_file_is_named(tmp_path, tiny_llama_checkpoint, missing, capsys):
    hf_dir = shutil.copytree(tiny_llama_checkpoint, tmp_path / "ckpt")
    (hf_dir / missing).unlink()
    out = tmp_path / "x.gguf"
    assert main(["convert", str(hf_dir), "--out", str(out)]) == 1
    assert missing in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x.gguf.partial").exists()


def test_all_from_a_local_folder(tmp_path, tiny_llama_checkpoint, capsys):
    out = tmp_path / "models" / "tiny.Q4_0.gguf"
    assert main(["all", str(tiny_llama_checkpoint), "--out", str(out), "--type", "Q4_0"]) == 0
    printed = capsys.readouterr().out
    assert "architecture:  llama" in printed and "quantization:  Q4_0" in printed
    assert out.is_file() and not (tmp_path / "models" / "tiny.f16.gguf").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.Q4_0.gguf"]
