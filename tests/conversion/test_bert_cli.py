"""The command line on BERT checkpoints: convert, all (convert + quantize + verify), verify, clear refusals."""

from __future__ import annotations

import re

import gguf

from conversion.cli import main


def test_all_quantizes_an_embedding_model_and_verifies_it_by_embedding(tmp_path, minilm_checkpoint, capsys):
    """What `make quantize SOURCE=<dir> QUANT=Q8_0 OUT=...` runs: an encoder has no generation to try,
    so verify loads it with embeddings on and its pooling, and embeds the prompt."""
    out = tmp_path / "all-MiniLM-L6-v2.Q8_0.gguf"
    assert main(["all", str(minilm_checkpoint), "--out", str(out), "--type", "Q8_0"]) == 0
    report = capsys.readouterr().out
    assert "architecture:  bert" in report and "quantization:  Q8_0" in report
    assert re.search(r"sample: +'384 floats \(mean pooling\): -?\d", report)
    reader = gguf.GGUFReader(out)
    assert {t.tensor_type for t in reader.tensors if len(t.shape) == 2 and t.name.startswith("blk.")} == {
        gguf.GGMLQuantizationType.Q8_0
    }
    assert not (tmp_path / "all-MiniLM-L6-v2.f16.gguf").exists()  # the intermediate file is gone


def test_convert_and_verify_a_reranker(tmp_path, tiny_reranker_checkpoint, capsys):
    out = tmp_path / "reranker.f32.gguf"
    assert main(["convert", str(tiny_reranker_checkpoint), "--out", str(out), "--type", "f32"]) == 0
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == gguf.LlamaFileType.ALL_F32
    assert main(["verify", str(out)]) == 0
    assert re.search(r"sample: +'1 score \(rank head\): -?\d", capsys.readouterr().out)


def test_keep_pooler_is_refused_for_a_llama(tmp_path, tiny_llama_checkpoint, capsys):
    out = tmp_path / "llama.gguf"
    assert main(["convert", str(tiny_llama_checkpoint), "--out", str(out), "--keep-pooler"]) == 1
    assert "BERT rerankers only" in capsys.readouterr().err and not out.exists()


def test_an_unknown_architecture_names_the_supported_ones(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.gguf")]) == 1
    err = capsys.readouterr().err
    assert "GPT2LMHeadModel" in err and "LlamaForCausalLM" in err and "BertForSequenceClassification" in err


def test_a_bert_without_a_vocabulary_is_refused(tmp_path, tiny_reranker_checkpoint, capsys):
    import shutil

    hf_dir = tmp_path / "no-vocab"
    shutil.copytree(tiny_reranker_checkpoint, hf_dir)
    (hf_dir / "vocab.txt").unlink()
    assert main(["convert", str(hf_dir), "--out", str(tmp_path / "x.gguf")]) == 1
    assert "vocab.txt" in capsys.readouterr().err and not (tmp_path / "x.gguf").exists()
