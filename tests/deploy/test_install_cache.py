"""A second install takes llama.cpp from the wheel cache (deploy/llama_wheel.sh) instead of compiling it again.

Two fresh clones of this repository in a row run `make install` into their own .venv. The second must not
compile: its log says it used the cached wheel, it finishes in a fraction of a compile's 5-10 minutes, and it
loads the same llama.cpp libraries, byte for byte, as the first. In CI the suite's own `make install` filled
the cache before the tests ran, so both clones find it; where the cache is empty the first clone compiles
once (and fills it). The cache is the user's own (LAPTOP_LLAMA_CACHE, else ~/.cache/laptop-llama), as a
person's second clone would find it; nothing here removes it.

The key's other half, that a changed key does compile, is checked on a wheel that builds in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "llama_wheel.sh"
CACHED = "no compiling, using the wheel built earlier"
COMPILING = "Compiling llama.cpp"
# A compile takes 5-10 minutes on 2 cores; the rest of an install (a venv, every other wheel from pip's
# cache) about 40 s on a 2-core machine. The bound: a second install takes under a minute.
NO_COMPILE_SECONDS = 60


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the outer make's or venv's variables (the clone's make is a fresh one)."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV", "PYTHONPATH"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def make_install(clone: Path) -> tuple[float, str]:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    start = time.monotonic()
    done = subprocess.run(
        ["make", "install"], cwd=clone, env=clean_env(), capture_output=True, text=True, timeout=3600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.monotonic() - start, done.stdout + done.stderr


def library_hashes(clone: Path) -> dict[str, str]:
    """sha256 of every shared library llama_cpp loads from the clone's venv (libllama, libggml*)."""
    code = "import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent)"
    done = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", code], env=clean_env(), capture_output=True, text=True, check=True
    )
    package = Path(done.stdout.strip())
    assert package.is_relative_to(clone), f"llama_cpp was imported from outside the clone: {package}"
    libraries = sorted(package.rglob("*.so*"))
    assert any(p.name.startswith("libllama") for p in libraries), libraries
    return {str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest() for p in libraries}


@pytest.mark.slow
def test_a_second_clone_installs_without_compiling(tmp_path):
    try:
        _, first_log = make_install(tmp_path / "first")
        seconds, second_log = make_install(tmp_path / "second")
        assert CACHED in second_log and COMPILING not in second_log, second_log[-3000:]
        assert seconds < NO_COMPILE_SECONDS, f"the second install took {seconds:.0f} s"
        assert library_hashes(tmp_path / "second") == library_hashes(tmp_path / "first")
        print(f"second make install: {seconds:.0f} s (first: {'compiled' if COMPILING in first_log else 'cached'})")
    finally:  # two virtual environments of several hundred MB each
        shutil.rmtree(tmp_path, ignore_errors=True)


def run_script(python: str, pin: str, cache: Path, cmake_args: str, patches: Path) -> str:
    done = subprocess.run(
        [str(SCRIPT), python, pin],
        env=clean_env(LAPTOP_LLAMA_CACHE=str(cache), CMAKE_ARGS=cmake_args, LAPTOP_LLAMA_PATCHES=str(patches)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_cache_key_follows_the_cmake_arguments(tmp_path):
    """Same key: the kept wheel is installed; other CMAKE_ARGS: built again and kept apart, with its key written out.

    The pin is a small pure-Python package (built in seconds, from pip's cache), standing in for llama-cpp-python:
    the script treats any pin alike."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pin, cache, none = "six==1.16.0", tmp_path / "cache", tmp_path / "no-patches"
    none.mkdir()

    assert COMPILING in run_script(python, pin, cache, "-DGGML_NATIVE=OFF", none)
    assert CACHED in run_script(python, pin, cache, "-DGGML_NATIVE=OFF", none)
    assert COMPILING in run_script(python, pin, cache, "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF", none)
    keys = sorted((cache / "wheels").iterdir())
    assert len(keys) == 2, keys  # no temporary build directory left behind either
    texts = [(k / "key.txt").read_text() for k in keys]
    assert {t.splitlines()[1] for t in texts} == {
        "cmake_args: -DGGML_NATIVE=OFF",
        "cmake_args: -DGGML_NATIVE=OFF -DGGML_AVX512=OFF",
    }
    assert all(t.startswith(f"pin: {pin}\n") and "\ncc: " in t and "\npython: " in t for t in texts)
    assert all(len(list(k.glob("*.whl"))) == 1 for k in keys)


SIX_PATCH = """\
--- a/six.py
+++ b/six.py
@@ -27,3 +27,4 @@
 import operator
 import sys
+PATCHED = {value!r}
 import types
"""


def test_patches_are_applied_to_the_source_and_are_part_of_the_key(tmp_path):
    """The patches folder (deploy/llama-patches for llama.cpp) is applied to the pinned source
    distribution before it is built; a changed patch is another key, so it builds again."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pin, cache, patches = "six==1.16.0", tmp_path / "cache", tmp_path / "patches"
    patches.mkdir()
    read = [python, "-c", "import six; print(six.PATCHED)"]

    (patches / "0001-mark.patch").write_text(SIX_PATCH.format(value="one"))
    log = run_script(python, pin, cache, "-DGGML_NATIVE=OFF", patches)
    assert COMPILING in log and "Applying 0001-mark.patch" in log, log
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout == "one\n"
    assert CACHED in run_script(python, pin, cache, "-DGGML_NATIVE=OFF", patches)

    (patches / "0001-mark.patch").write_text(SIX_PATCH.format(value="two"))
    assert COMPILING in run_script(python, pin, cache, "-DGGML_NATIVE=OFF", patches)
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout == "two\n"
    keys = [(k / "key.txt").read_text() for k in sorted((cache / "wheels").iterdir())]
    assert len(keys) == 2 and all("\npatches: " in k for k in keys), keys


def test_the_llama_cpp_in_use_carries_our_patches():
    """`make install` applied deploy/llama-patches: the batch-invariant flash attention that the
    server's BATCH_INVARIANT needs (server/engine/invariance.py) is in the library loaded."""
    from server.engine import invariance

    assert sorted(p.name for p in (ROOT / "deploy" / "llama-patches").glob("*.patch")), "no patches to check"
    assert invariance.available(), "llama_cpp was built without deploy/llama-patches: run make install"
