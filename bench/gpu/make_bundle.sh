#!/usr/bin/env bash
# Make the offline bundle that a GPU machine without internet needs (run here, with PyPI).
#
# The GPU machine has CUDA, CMake, ninja, numpy, sentencepiece, Jinja2 and pytest, but no
# network. This writes, into BUNDLE (default .gpu/, git-ignored via .git/info/exclude):
#   src/llama_cpp_python-<PIN>-trimmed.tar.gz  the pinned sdist without what the build never
#                                              reads (vocab GGUFs, docs, tests, examples, .git): ~8 MB
#   whl/*.whl        pure-Python wheels the project needs that the machine lacks, and py-spy
#   data/llama2-tokenizer.model   the tokenizer the 7B-shaped checkpoint is written with
#
#   bash bench/gpu/make_bundle.sh [--force] [TOKENIZER]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${BUNDLE:-.gpu}
PY=${PY:-.venv/bin/python}
PIN=$(sed -n 's/^llama-cpp-python==//p' requirements.txt)
FORCE=0; [[ "${1:-}" == "--force" ]] && { FORCE=1; shift; }
TOKENIZER=${1:-../shared/data/llama2-tokenizer.model}
if [[ -e "$BUNDLE/src" && $FORCE == 0 ]]; then
  echo "$BUNDLE/ already holds a bundle; pass --force to rebuild it" >&2; exit 1
fi
[[ -f "$TOKENIZER" ]] || { echo "tokenizer not found: $TOKENIZER (pass its path)" >&2; exit 1; }
rm -rf "$BUNDLE/src" "$BUNDLE/whl" "$BUNDLE/data" "$BUNDLE/dl"
mkdir -p "$BUNDLE/src" "$BUNDLE/whl" "$BUNDLE/data" "$BUNDLE/dl"

"$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$PIN" -d "$BUNDLE/dl"
tar -C "$BUNDLE/dl" -xzf "$BUNDLE/dl/llama_cpp_python-$PIN.tar.gz"
SRC="$BUNDLE/dl/llama_cpp_python-$PIN"; V="$SRC/vendor/llama.cpp"
# The vendored llama.cpp is a shallow git checkout: keep its commit, then drop .git (39 MB).
git -C "$V" rev-parse HEAD > "$SRC/LLAMA_CPP_COMMIT"
# Not read by CMake with tests/examples off: keep only what the library, tools and server build from.
rm -rf "$SRC"/{.git,.github,docs,examples,tests,docker} "$V"/{.git,.github,.devops,docs,media,tests,examples,pocs,benches,ci,skills,gguf-py,conversion,requirements} \
       "$V"/convert_*.py "$V"/tools/ui/{src,static,tests} "$V"/tools/server/tests
find "$V/models" -name '*.gguf*' -delete
tar -C "$BUNDLE/dl" -czf "$BUNDLE/src/llama_cpp_python-$PIN-trimmed.tar.gz" "llama_cpp_python-$PIN"
rm -rf "$BUNDLE/dl"

# Pure-Python wheels for the machine's Python (3.12); versions as pinned in requirements.txt
# where pinned, else what Flask 3.1 needs. Keep one version of each.
pin() { sed -n "s/^$1==//Ip" requirements.txt; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$BUNDLE/whl" \
  "gguf==$(pin gguf)" "Flask==$(pin Flask)" "gunicorn==$(pin gunicorn)" \
  "prometheus_client==$(pin prometheus-client)" diskcache==5.6.3 blinker==1.9.0 \
  itsdangerous==2.2.0 Werkzeug==3.1.9 \
  "requests==$(pin requests)" urllib3==2.8.0 idna==3.20 certifi==2026.10.18 charset_normalizer==3.5.2 \
  py-spy==0.4.2   # the benches' HTTP client, and a sampling profiler for the server on the GPU
cp "$TOKENIZER" "$BUNDLE/data/llama2-tokenizer.model"
du -sh "$BUNDLE"/*
