"""Which models the catalog finds and by which names: MODELS_DIR (recursively, split models by their
first shard, hidden and partial files left out), the Hugging Face cache (by stem and by pull
reference, the snapshot refs/main names), presets (aliases, `from`, `file`), and the default.

The catalog reads names and paths only, so the files here are empty stand-ins; what a name finds
is a table lookup, never a path built from the name.
"""

from __future__ import annotations

import os

import pytest

from server.errors import ModelNotFound
from server.library.catalog import Catalog, quant_of
from server.settings import Settings, SettingsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def cached(cache, repo, name, commit=COMMIT, main=True):
    folder = cache / ("models--" + repo.replace("/", "--"))
    blob = touch(folder / "blobs" / f"{abs(hash(name))}")
    link = folder / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, link.parent), link)
    (folder / "refs").mkdir(exist_ok=True)
    if main:
        (folder / "refs" / "main").write_text(commit)
    return link


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "models", tmp_path / "hub"


def catalog(dirs, **settings):
    models, cache = dirs
    models.mkdir(exist_ok=True)
    return Catalog(Settings(models_dir=str(models), **settings), models, cache=cache)


def test_models_dir_names_files_by_stem_and_skips_what_is_not_a_model(dirs):
    models, _ = dirs
    touch(models / "a.gguf")
    touch(models / "sub" / "b.Q4_K_M.gguf")
    touch(models / "big-00001-of-00002.gguf")
    touch(models / "big-00002-of-00002.gguf")
    touch(models / ".hidden.gguf")
    touch(models / ".cache" / "c.gguf")
    touch(models / "d.gguf.partial")
    names = {m.name for m in catalog(dirs).models()}
    assert names == {"a", "b.Q4_K_M", "big"}
    assert catalog(dirs).find("big").path.name == "big-00001-of-00002.gguf"
    assert catalog(dirs).find("A:latest").name == "a"


def test_the_hub_cache_names_a_model_by_stem_and_by_pull_reference(dirs):
    _, cache = dirs
    cached(cache, "user/Repo-GGUF", "repo-Q4_K_M.gguf")
    cached(cache, "user/Repo-GGUF", "repo-Q8_0.gguf")
    cached(cache, "user/Repo-GGUF", "old-Q4_0.gguf", commit="f" * 40, main=False)  # not the snapshot refs/main names
    c = catalog(dirs)
    assert {m.name for m in c.models()} == {"repo-Q4_K_M", "repo-Q8_0"}
    assert c.find("hf.co/user/Repo-GGUF").name == "repo-Q4_K_M"  # Q4_K_M by default
    assert c.find("hf.co/user/repo-gguf:q8_0").name == "repo-Q8_0"
    assert c.find("user/Repo-GGUF/repo-Q8_0.gguf").name == "repo-Q8_0"
    with pytest.raises(ModelNotFound) as missing:
        c.find("hf.co/user/Repo-GGUF:IQ2_XS")
    assert sorted(missing.value.message.split("available: ")[1].split(", ")) == ["repo-Q4_K_M", "repo-Q8_0"]


def test_a_pulled_file_whose_stem_is_taken_is_named_by_its_reference(dirs):
    models, cache = dirs
    touch(models / "repo-Q4_K_M.gguf")
    cached(cache, "user/Repo-GGUF", "repo-Q4_K_M.gguf")
    c = catalog(dirs)
    assert c.find("repo-Q4_K_M").source == "models_dir"
    assert c.find("hf.co/user/Repo-GGUF:Q4_K_M").source == "cache"


def test_presets_add_aliases_copies_and_files(dirs, tmp_path):
    models, _ = dirs
    touch(models / "a.gguf")
    elsewhere = touch(tmp_path / "far" / "x.gguf")
    (models / "presets.toml").write_text(
        '[models.a]\naliases = ["small"]\nn_ctx = 1024\n'
        '[models.copy]\nfrom = "small"\nn_ctx = 256\n'
        f'[models.far]\nfile = "{elsewhere}"\n'
    )
    c = catalog(dirs)
    assert c.find("small").name == "a" and c.find("a").preset.settings == {"n_ctx": 1024}
    copy = c.find("copy")
    assert copy.path == c.find("a").path and copy.source == "preset" and copy.preset.settings == {"n_ctx": 256}
    assert c.find("far").path == elsewhere


def test_the_default_is_the_setting_then_model_then_llama_2_then_the_embedded_one(dirs, tmp_path):
    models, _ = dirs
    touch(models / "a.gguf")
    made = []

    def embedded():
        made.append(True)
        return touch(models / "smollm2-135m-instruct-q4_1.gguf")

    c = Catalog(Settings(models_dir=str(models)), models, cache=dirs[1], default_file=embedded)
    assert c.default().name == "smollm2-135m-instruct-q4_1" and made
    touch(models / "llama-2-7b-chat.Q4_K_M.gguf")
    c.scan()
    assert c.default().name == "llama-2-7b-chat.Q4_K_M"
    explicit = touch(tmp_path / "given.gguf")
    assert catalog(dirs, model=str(explicit)).default().name == "given"
    assert catalog(dirs, default_model="a").default().name == "a"
    with pytest.raises(SettingsError, match="LLAMA_SERVER_DEFAULT_MODEL"):
        catalog(dirs, default_model="nope").default()


def test_a_name_is_looked_up_never_opened(dirs, tmp_path):
    touch(tmp_path / "outside.gguf")
    c = catalog(dirs)
    for name in ("../outside", "../outside.gguf", str(tmp_path / "outside.gguf"), "outside"):
        with pytest.raises(ModelNotFound):
            c.find(name)


@pytest.mark.parametrize(
    "name, quant",
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.IQ3_XXS.gguf", "IQ3_XXS"),
        ("x-f16.gguf", "F16"),
        ("x-Q8_0-00001-of-00002.gguf", "Q8_0"),
        ("no-quant.gguf", None),
    ],
)
def test_quant_tags_are_read_from_file_names(name, quant):
    assert quant_of(name) == quant
