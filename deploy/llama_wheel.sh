#!/usr/bin/env bash
# Install llama-cpp-python into a virtual environment from a wheel cache of our own, compiling
# llama.cpp only when no wheel was built for the same pin, CMake arguments, compiler and CPU.
#
#   CMAKE_ARGS="..." deploy/llama_wheel.sh PYTHON PIN
#   CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8" deploy/llama_wheel.sh .venv/bin/python llama-cpp-python==0.3.36
#
# Used by `make install`, `make install-cuda` and the Dockerfile. pip's own wheel cache keys a
# source build by name and version only, never by CMAKE_ARGS, so it would hand a CPU build to a
# CUDA install (or one CPU's -march=native build to another) without a word: the build here runs
# with --no-cache-dir and the result is kept under
#   ${LAPTOP_LLAMA_CACHE:-${XDG_CACHE_HOME:-~/.cache}/laptop-llama}/wheels/KEY/
# where KEY hashes what the wheel depends on, written out beside it in key.txt. The wheel is built
# in a temporary directory and renamed into place once whole, so an interrupted build leaves no
# wheel behind. `make clean` keeps the cache; `make clean-all` removes it.
#
# The patches in deploy/llama-patches/ (each says why in its header) are applied to the pinned
# source distribution before it is built, as Ollama patches the llama.cpp it vendors; they are
# part of the key, so a changed patch builds again (LAPTOP_LLAMA_PATCHES names another folder).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: CMAKE_ARGS=... $0 PYTHON PIN" >&2
  exit 2
fi
python=$1
pin=$2
cache=${LAPTOP_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/laptop-llama}/wheels
patches=${LAPTOP_LLAMA_PATCHES:-$(cd "$(dirname "$0")" && pwd)/llama-patches}
args=" ${CMAKE_ARGS:-} "

# Everything the compiled library depends on, one line each.
describe() {
  echo "pin: $pin"
  echo "cmake_args: ${CMAKE_ARGS:-}"
  echo "python: $("$python" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')"
  echo "cc: $("${CC:-cc}" --version 2>/dev/null | head -n1)"
  echo "c++: $("${CXX:-c++}" --version 2>/dev/null | head -n1)"
  case $args in
    *GGML_CUDA=[Oo][Nn]*)
      echo "nvcc: $("${CUDACXX:-nvcc}" --version 2>/dev/null | tail -n1)"
      # The default architecture, native, is whatever GPU this machine has.
      case $args in *CMAKE_CUDA_ARCHITECTURES=native*)
        echo "gpu: $(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u | tr '\n' ' ')" ;;
      esac ;;
  esac
  # Unless told otherwise ggml compiles for this CPU (-march=native): a wheel built on another
  # CPU (a home directory shared between machines) could stop with an illegal instruction here.
  case $args in
    *GGML_NATIVE=OFF*) ;;
    *) echo "cpu: $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cksum | cut -d' ' -f1)" ;;
  esac
  if compgen -G "$patches/*.patch" >/dev/null; then
    echo "patches: $(cat "$patches"/*.patch | sha256sum | cut -c1-16)"
  fi
}

key_text=$(describe)
key=$(printf '%s\n' "$key_text" | sha256sum | cut -c1-16)
dir=$cache/$key

if compgen -G "$dir/*.whl" >/dev/null; then
  echo "llama-cpp-python: no compiling, using the wheel built earlier for the same pin, CMake arguments," \
    "compiler and CPU: $dir"
else
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.build-$key.XXXXXX")
  ticker=
  trap 'rm -rf "$tmp"; [ -z "$ticker" ] || kill "$ticker" 2>/dev/null || true' EXIT
  case $args in
    *GGML_CUDA=[Oo][Nn]*) how_long="about 5-6 minutes on 16 cores per CUDA architecture, longer on fewer" ;;
    *) how_long="about 5-10 minutes on 2 cores" ;;
  esac
  echo "Compiling llama.cpp ($pin, CMAKE_ARGS=\"${CMAKE_ARGS:-}\"): $how_long."
  echo "This happens once: the wheel is kept in $dir for every later install with the same key."
  # pip shows a spinner on a terminal and nothing at all in a log: say every minute that it is alive.
  if [ ! -t 1 ]; then
    (
      # sleep must not hold our stdout open: a caller reading it to its end would wait for the sleep.
      minutes=0
      while sleep 60 </dev/null >/dev/null 2>&1; do
        minutes=$((minutes + 1))
        echo "  ... still compiling llama.cpp ($minutes min so far)"
      done
    ) &
    ticker=$!
  fi
  start=$SECONDS
  source=$pin
  if compgen -G "$patches/*.patch" >/dev/null; then
    if [ -d "$pin" ]; then  # a source tree (an offline machine's bundle): patched in a copy
      mkdir -p "$tmp/sdist" && cp -a "$pin" "$tmp/sdist/"
    else
      "$python" -m pip download --no-deps --no-binary :all: --no-cache-dir --disable-pip-version-check \
        --dest "$tmp/sdist" "$pin"
      tar -xzf "$tmp"/sdist/*.tar.gz -C "$tmp/sdist"
    fi
    source=$(find "$tmp/sdist" -mindepth 1 -maxdepth 1 -type d)
    for p in "$patches"/*.patch; do
      echo "Applying $(basename "$p")"
      if command -v patch >/dev/null; then
        patch -p1 --batch --forward --silent -d "$source" <"$p"
      else  # a machine without patch(1): git applies a unified diff outside a repository too
        (cd "$source" && git apply -p1 -) <"$p"
      fi
    done
  fi
  "$python" -m pip wheel --no-deps --no-cache-dir --disable-pip-version-check --wheel-dir "$tmp/wheel" "$source"
  printf '%s\n' "$key_text" >"$tmp/wheel/key.txt"
  # Renamed whole; if another install finished the same key first, its wheel is as good as ours.
  mv -T "$tmp/wheel" "$dir" 2>/dev/null || compgen -G "$dir/*.whl" >/dev/null
  echo "Compiled llama.cpp in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s; kept in $dir"
fi

# --force-reinstall: the same version from another build (a CPU one, for `make install-cuda`) is replaced.
"$python" -m pip install --no-deps --force-reinstall --disable-pip-version-check "$dir"/*.whl
