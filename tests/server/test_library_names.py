"""Model names, keep_alive durations, presets and the budget's rules: the library's pure parts.

Names that try to become paths are refused whatever their bytes (hypothesis), and no lookup
ever touches the file system with them; a bad preset names the file, the model and the key.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import InvalidRequest
from server.library.budget import Budget, Resident, could_ever_fit, shortfall, victims
from server.library.names import check_name, nearest, pull_ref
from server.library.presets import load_presets
from server.model.memory import Memory
from server.settings import Settings, SettingsError, parse_duration

MIB = 1 << 20


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "/etc/passwd", "a/../b", "models/x", "x\x00y", "C:\\x", "http://evil/x.gguf", "..", ".", "~root"],
)
def test_names_that_would_be_paths_are_refused(name):
    with pytest.raises(InvalidRequest) as caught:
        check_name(name)
    assert caught.value.field == "model"


@pytest.mark.parametrize(
    "name, repo, quant, filename",
    [
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M", None),
        ("hf.co/user/repo:q8_0", "user/repo", "q8_0", None),
        ("huggingface.co/user/repo:IQ3_M", "user/repo", "IQ3_M", None),
        ("user/repo/model-Q4_K_M.gguf", "user/repo", None, "model-Q4_K_M.gguf"),
    ],
)
def test_pull_references_are_names(name, repo, quant, filename):
    assert check_name(name) == name
    ref = pull_ref(name)
    assert ref is not None and (ref.repo_id, ref.quant, ref.filename) == (repo, quant, filename)


@pytest.mark.parametrize("name", ["hf.co/../x", "hf.co/a/..:Q4", "a/../b.gguf", "hf.co/a/b/c", "hf.co/a:Q4"])
def test_malformed_pull_references_are_refused(name):
    assert pull_ref(name) is None
    with pytest.raises(InvalidRequest):
        check_name(name)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_any_text_is_a_plain_name_a_pull_reference_or_a_400(text):
    try:
        name = check_name(text)
    except InvalidRequest as exc:
        assert exc.field == "model"
        return
    ref = pull_ref(name)
    if ref is None:  # a plain name: nothing that a file system would read as a path
        assert "/" not in name and "\\" not in name and "\x00" not in name and name not in (".", "..")
    else:
        assert ".." not in name


def test_nearest_names_come_first():
    names = ["smollm2-135m-instruct-q4_1", "gemma-3-270m-q4_k_m", "llama-2-7b-chat.Q4_K_M"]
    assert nearest("gemma", names)[0] == "gemma-3-270m-q4_k_m"
    assert nearest("smolm2", names)[0] == "smollm2-135m-instruct-q4_1"
    assert sorted(nearest("x", names)) == sorted(names)


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        (0, 0.0),
        ("0", 0.0),
        (3600, 3600.0),
        ("-1", None),
        (-1, None),
        ("-1m", None),
    ],
)
def test_keep_alive_is_read_as_ollama_reads_it(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "", "m", True, "inf", "nan", "1e400"])
def test_bad_keep_alive_is_refused(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def write(tmp_path, text):
    path = tmp_path / "presets.toml"
    path.write_text(text)
    return path


def test_presets_give_settings_sampling_aliases_and_new_names(tmp_path):
    presets = load_presets(
        write(
            tmp_path,
            '[models.small]\naliases = ["s"]\nn_ctx = 1024\nkeep_alive = "10m"\ntemperature = 0.2\npinned = true\n'
            '[models."coder"]\nfrom = "small"\nparallel = 1\nkeep_alive = -1\n',
        ),
        Settings(),
    )
    small, coder = presets["small"], presets["coder"]
    assert small.aliases == ("s",) and small.settings == {"n_ctx": 1024} and small.keep_alive == 600.0
    assert small.sampling == {"temperature": 0.2} and small.pinned is True
    assert coder.source == "small" and coder.settings == {"parallel": 1} and coder.keep_alive is None
    assert small.apply(Settings()).n_ctx == 1024


@pytest.mark.parametrize(
    "text, key",
    [
        ("[models.m]\nn_ctx = 10\n", "n_ctx"),
        ("[models.m]\nn_ctx = 'big'\n", "n_ctx"),
        ("[models.m]\nparallel = [1]\n", "parallel"),
        ("[models.m]\nkv_cache_type = 'q8_0'\n", "kv_cache_type"),  # a quantized V cache needs flash attention
        ("[models.m]\nflavour = 1\n", "flavour"),
        ("[models.m]\nkeep_alive = 'soon'\n", "keep_alive"),
        ("[models.m]\ntemperature = 9\n", "temperature"),
        ("[models.m]\naliases = 'x'\n", "aliases"),
        ("[models.m]\nfile = 'nowhere.gguf'\n", "file"),
        ("[models.m]\npinned = 'yes'\n", "pinned"),
    ],
)
def test_a_bad_preset_names_the_file_the_model_and_the_key(tmp_path, text, key):
    from server.http.fields import sampling_problem

    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_presets(path, Settings(), sampling_problem)
    message = str(caught.value)
    assert str(path) in message and "model 'm'" in message and f"key '{key}'" in message


def test_a_presets_file_that_does_not_parse_is_named(tmp_path):
    path = write(tmp_path, "[models.m\n")
    with pytest.raises(SettingsError, match=str(path)):
        load_presets(path, Settings())


def resident(name, ram, idle=True, pinned=False, expired=False, last_used=0.0):
    return Resident(name, Memory(weights_ram=ram * MIB), idle, pinned, expired, last_used)


def test_idle_models_give_way_expired_first_then_least_recently_used():
    residents = [
        resident("busy", 100, idle=False),
        resident("pinned", 100, pinned=True),
        resident("recent", 100, last_used=50),
        resident("old", 100, last_used=10),
        resident("expired", 100, expired=True, last_used=90),
    ]
    assert [r.name for r in victims(residents)] == ["expired", "old", "recent"]


def test_shortfall_counts_ram_and_the_prompt_cache_limit():
    budget = Budget(ram=1000 * MIB, vram=0)
    loaded = [resident("a", 600)]
    assert shortfall(budget, loaded, Memory(weights_ram=300 * MIB)) == (0, 0)
    assert shortfall(budget, loaded, Memory(weights_ram=300 * MIB, cache_ram=200 * MIB)) == (100 * MIB, 0)
    assert could_ever_fit(budget, loaded, Memory(weights_ram=900 * MIB))
    assert not could_ever_fit(budget, [resident("p", 600, pinned=True)], Memory(weights_ram=500 * MIB))


def test_name_characters_stay_names():
    for char in string.punctuation.replace("/", "").replace("\\", ""):
        name = f"model{char}x"
        if name in (".", ".."):
            continue
        assert check_name(name) == name
