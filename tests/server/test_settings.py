"""Settings from LLAMA_SERVER_* variables: defaults, parsing, precedence, and errors naming the variable."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.__main__ import build_parser, settings_environ
from server.settings import Settings, SettingsError, env_name, physical_cores

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    s = Settings.from_env({})
    assert (s.n_ctx, s.host, s.port, s.n_gpu_layers, s.workers) == (4096, "127.0.0.1", 8000, "auto", 1)
    assert s.n_threads == physical_cores() >= 1
    assert s.model is None and s.api_key is None
    assert (s.parallel, s.prefill_chunk, s.prefix_cache, s.flash_attn) == ("auto", 128, True, "auto")
    assert s.cache_ram == "auto"


def test_values_are_parsed_from_the_environment(gemma_gguf):
    env = {
        "LLAMA_SERVER_MODEL": str(gemma_gguf),
        "LLAMA_SERVER_N_CTX": "2048",
        "LLAMA_SERVER_N_GPU_LAYERS": "-1",
        "LLAMA_SERVER_TENSOR_SPLIT": "3,1",
        "LLAMA_SERVER_FLASH_ATTN": "yes",
        "LLAMA_SERVER_KV_CACHE_TYPE": "Q8_0",
        "LLAMA_SERVER_VRAM_BUDGET_MB": "4096",
        "LLAMA_SERVER_REQUEST_TIMEOUT": "30.5",
        "LLAMA_SERVER_API_KEY": "k",
        "LLAMA_SERVER_PARALLEL": "3",
        "LLAMA_SERVER_PREFILL_CHUNK": "64",
        "LLAMA_SERVER_PREFIX_CACHE": "off",
    }
    s = Settings.from_env(env)
    assert s.model == str(gemma_gguf) and s.n_ctx == 2048 and s.n_gpu_layers == -1
    assert s.tensor_split == (3.0, 1.0) and s.flash_attn == "on"
    assert (s.parallel, s.prefill_chunk, s.prefix_cache) == (3, 64, False)
    assert Settings.from_env({"LLAMA_SERVER_PARALLEL": "AUTO"}).parallel == "auto"
    assert Settings.from_env({"LLAMA_SERVER_FLASH_ATTN": "0"}).flash_attn == "off"
    assert s.kv_cache_type == "q8_0" and s.kv_cache_ggml_type == 8
    assert s.vram_budget_mb == 4096 and s.request_timeout == 30.5 and s.api_key == "k"


def test_flags_beat_the_environment_which_beats_the_defaults():
    """Through the path `python -m server` takes: flags laid over the environment, then read."""
    environ = settings_environ(["--port", "9100"], {"LLAMA_SERVER_PORT": "9000", "LLAMA_SERVER_N_CTX": "1024"})
    s = Settings.from_env(environ)
    assert (s.port, s.n_ctx, s.host) == (9100, 1024, "127.0.0.1")


BAD = [
    ("LLAMA_SERVER_PORT", "eighty"),
    ("LLAMA_SERVER_PORT", "70000"),
    ("LLAMA_SERVER_N_CTX", "16"),
    ("LLAMA_SERVER_N_GPU_LAYERS", "some"),
    ("LLAMA_SERVER_N_GPU_LAYERS", "-2"),
    ("LLAMA_SERVER_FLASH_ATTN", "maybe"),
    ("LLAMA_SERVER_KV_CACHE_TYPE", "q3"),
    ("LLAMA_SERVER_TENSOR_SPLIT", "1,x"),
    ("LLAMA_SERVER_TENSOR_SPLIT", "0,0"),
    ("LLAMA_SERVER_QUEUE_SIZE", "0"),
    ("LLAMA_SERVER_VRAM_BUDGET_MB", "-5"),
    ("LLAMA_SERVER_N_THREADS", "0"),
    ("LLAMA_SERVER_PARALLEL", "0"),
    ("LLAMA_SERVER_PARALLEL", "many"),
    ("LLAMA_SERVER_PREFILL_CHUNK", "0"),
    ("LLAMA_SERVER_PREFIX_CACHE", "sometimes"),
    ("LLAMA_SERVER_CACHE_RAM", "-1"),
    ("LLAMA_SERVER_CACHE_RAM", "lots"),
]


@pytest.mark.parametrize("name,value", BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    "env,named",
    [
        ({"LLAMA_SERVER_MAX_TOKENS": "4096"}, "LLAMA_SERVER_MAX_TOKENS"),
        ({"LLAMA_SERVER_KV_CACHE_TYPE": "q8_0"}, "LLAMA_SERVER_FLASH_ATTN"),
        ({"LLAMA_SERVER_PARALLEL": "16", "LLAMA_SERVER_N_BATCH": "8"}, "LLAMA_SERVER_N_BATCH"),
        # Every open answer holds a thread; one must stay free for /api/health and /metrics.
        ({"LLAMA_SERVER_HTTP_THREADS": "8"}, "LLAMA_SERVER_HTTP_THREADS"),
        ({"LLAMA_SERVER_PARALLEL": "8", "LLAMA_SERVER_QUEUE_SIZE": "24"}, "LLAMA_SERVER_HTTP_THREADS"),
    ],
)
def test_settings_that_contradict_each_other(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_settings_take_a_model_path_as_it_is():
    """The file itself is checked by the entry points (server/model/files.py), not here:
    settings read no files."""
    assert Settings.from_env({"LLAMA_SERVER_MODEL": "/no/such/model.gguf"}).model == "/no/such/model.gguf"


def test_frozen_and_the_key_stays_out_of_repr():
    s = Settings(api_key="topsecret")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert "topsecret" not in repr(s)


def test_every_setting_is_documented_and_in_help():
    """The settings page's table is made from the dataclass (docs/hooks/docs_hooks.py) and names every
    setting and flag; the notes under it name only settings that exist; --help has each flag."""
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert "<!-- settings-table -->" in page
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    rows = [line.split("|") for line in hooks.settings_table().splitlines() if line.startswith("| <a id=")]
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [re.findall(r"`([A-Z0-9_]+)`", row[1]) for row in rows] == [[n.upper()] for n in names]
    assert [row[2].strip() for row in rows] == [f"`--{n.replace('_', '-')}`" for n in names]
    notes = [line for line in page.splitlines() if line.startswith("- [`")]
    noted = {name for line in notes for name in re.findall(r"`([A-Z0-9_]+)`", line.split("]")[0])}
    assert noted and noted <= {n.upper() for n in names}, noted - {n.upper() for n in names}
    usage = build_parser().format_help()
    assert all(f"--{n.replace('_', '-')}" in usage and f"[{env_name(n)}]" in usage for n in names)


@pytest.mark.parametrize(
    "env,named",
    [
        ({"LLAMA_SERVER_PORT": "abc"}, "LLAMA_SERVER_PORT"),
        ({"LLAMA_SERVER_MODEL": "/missing.gguf"}, "model file not found"),
    ],
)
def test_gunicorn_stops_at_start_with_one_clear_line(env, named):
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("LLAMA_SERVER_N_CTX", "4k", "expected a whole number"),
        ("LLAMA_SERVER_REQUEST_TIMEOUT", "soon", "expected a number"),
        ("LLAMA_SERVER_PARALLEL", "zero", "expected auto or a whole number"),
        ("LLAMA_SERVER_TENSOR_SPLIT", "3,x", "expected a number"),
    ],
)
def test_unparsable_values_say_what_was_expected(name, value, expected):
    """The message is ours, not Python's ("invalid literal for int() with base 10")."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert str(err.value) == f"{name}={value!r}: {expected}"


GIB = 1 << 30


@pytest.mark.parametrize(
    "value,gpu_layers,total,ram,mib",
    [
        ("auto", 0, 33, 64 * GIB, 2048),  # CPU only: the KV cache is in RAM, recomputing a prompt is slow
        ("auto", 16, 33, 64 * GIB, 2048),  # partial offload: part of it still is
        ("auto", 0, 33, 8 * GIB, 819),  # a smaller machine: a tenth of what is available
        ("auto", 0, 33, None, 2048),  # available RAM unknown: the cap
        ("auto", 33, 33, 64 * GIB, 0),  # all on the GPU: recomputing beats copying states over PCIe
        ("512", 33, 33, 64 * GIB, 512),
        ("0", 0, 33, 64 * GIB, 0),  # a number is taken as it is
    ],
)
def test_cache_ram_auto_follows_the_machine_and_is_off_when_every_layer_is_on_the_gpu(
    value, gpu_layers, total, ram, mib
):
    from types import SimpleNamespace

    from server.engine.loading import cache_ram_mib

    plan = SimpleNamespace(offload=SimpleNamespace(n_gpu_layers=gpu_layers, total_layers=total))
    assert cache_ram_mib(Settings.from_env({"LLAMA_SERVER_CACHE_RAM": value}), plan, ram) == mib
