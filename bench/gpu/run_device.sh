#!/usr/bin/env bash
# The GPU reference run, on a machine with an NVIDIA GPU and no network (bundle: make_bundle.sh).
#
#   bash bench/gpu/run_device.sh start           # set up .venv, start the whole run in the background
#   bash bench/gpu/run_device.sh wait DIR [SEC]  # wait up to SEC s (default 540), copy results to DIR
#   bash bench/gpu/run_device.sh collect DIR     # copy what is there so far to DIR
#
# The background run (logs and outputs under bench/.work/gpu/) does, in order:
#   1. `make install-cuda` from the bundled sdist, for CUDA_ARCHS (default 90), keeping its CMake
#      build dir so llama-bench and llama-server come out of the same build, timed; meanwhile the
#      7B-shaped checkpoint is written;
#   2. our converter (f16) and quantizer (Q4_K_M) make the model: both need llama.cpp from step 1;
#   3. llama-bench pp512/tg128 at -ngl 99, 16, 8, 0 -> gpu-llama-bench.json;
#   4. the GPU-marked tests (gpu-pytest.log), then the auto-offload check -> gpu-offload.json;
#   5. our server's benches (server_benches.sh: engine-loop once the 7B is made, when named; serve-gpu,
#      concurrency, serve-split, profile;
#      cache-ab, side-by-side, cluster and speculative when named). The speculative stage also
#      makes a small random draft model (prepare_model.py --model draft) beside the 7B.
#      The 7B is made only when a stage needs it: engine-loop and speculative-smol run SmolLM2 alone.
# engine-loop needs SmolLM2 in two parts (split -b 45000000 into .gpu/smol1/part and .gpu/smol2/part, its sha256
# in .gpu/smol1/sha256) and the server as it was in .gpu/before/ (git archive <commit> server, its commit in
# COMMIT): on a machine that receives at most 64 MiB with each command, send smol1 and before with `start`,
# smol2 with the next command; both are kept under bench/.work/gpu/ as they come.
# STAGES picks among steps 3-5 (default: all), e.g. STAGES="tests serve-gpu concurrency" to skip
# llama-bench and the offload check when their results are already committed.
# Results stay under bench/.work/gpu/ (ignored, so they survive between calls on one machine)
# until `wait` copies them to DIR; copy them into bench/results/ here to commit them.
# Build outputs: .venv (CUDA llama_cpp) and bench/.work/gpu/build/bin/{llama-bench,llama-server}.
# `start` returns at once; a run already under way is never started twice.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUNDLE=${BUNDLE:-.gpu}
WORK=bench/.work/gpu
PIN=$(sed -n 's/^llama-cpp-python==//p' requirements.txt)
export CUDA_ARCHS=${CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
MODEL=$WORK/llama2-7b-random.Q4_K_M.gguf
export STAGES=${STAGES:-llama-bench tests offload serve-gpu concurrency serve-split profile}
has() { [[ " $STAGES " == *" $1 "* ]]; }

needs_7b() {  # every stage but the SmolLM2 ones runs on the 7B-shaped model
  local s; for s in $STAGES; do [[ $s == engine-loop || $s == speculative-smol ]] || return 0; done; return 1
}

note() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/progress.log"; }

setup_venv() {
  # A venv that sees the machine's own packages (torch's env has numpy, sentencepiece,
  # scikit-build-core, pytest) and takes the bundled wheels first; `make` then finds it installed.
  local base; base=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  python3 -m venv --without-pip .venv
  local site; site=$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')
  echo "$base" > "$site/machine-packages.pth"
  .venv/bin/python -m pip install -q --no-index --no-deps --no-compile "$BUNDLE"/whl/*.whl
  touch .venv/.installed   # requirements are satisfied offline; `make install` must not refetch them
}

build_cuda() {
  # Exactly the Makefile target, pointed at the local sdist. The extra CMake args (read by
  # scikit-build-core) add llama-bench and llama-server to the same build; mtmd is then built by
  # llama.cpp's own tools/ (LLAVA_BUILD off avoids adding it twice), and the UI is not fetched.
  local src; src=$ROOT/$WORK/src/llama_cpp_python-$PIN
  local t0=$SECONDS
  PIP_NO_BUILD_ISOLATION=0 PIP_NO_INDEX=1 SKBUILD_BUILD_DIR=$ROOT/$WORK/build \
  SKBUILD_CMAKE_ARGS="-DLLAVA_BUILD=OFF;-DLLAMA_BUILD_TOOLS=ON;-DLLAMA_BUILD_SERVER=ON;-DLLAMA_USE_PREBUILT_UI=OFF;-DLLAMA_OPENSSL=OFF" \
    make install-cuda CUDA_ARCHS="$CUDA_ARCHS" LLAMA_CPP_PIN="$src" > "$WORK/build.log" 2>&1
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"cuda_archs\": \"$CUDA_ARCHS\", \"jobs\": $CMAKE_BUILD_PARALLEL_LEVEL}" > "$WORK/build.json"
  return $rc
}

pipeline() {
  note "pipeline start"
  mkdir -p "$WORK/src" && tar -C "$WORK/src" -xzf "$BUNDLE/src/llama_cpp_python-$PIN-trimmed.tar.gz"
  build_cuda & local build_pid=$!
  if needs_7b; then
    .venv/bin/python bench/gpu/prepare_model.py checkpoint --work "$WORK" --tokenizer "$BUNDLE/data/llama2-tokenizer.model" \
      >> "$WORK/model.log" 2>&1 && note "checkpoint written" || note "checkpoint FAILED (model.log)"
  fi
  if has moderation; then
    .venv/bin/python bench/gpu/prepare_model.py checkpoint --model guard --work "$WORK" \
      --tokenizer "$BUNDLE/data/llama2-tokenizer.model" >> "$WORK/model.log" 2>&1 || note "guard checkpoint FAILED"
  fi
  if has speculative; then
    .venv/bin/python bench/gpu/prepare_model.py checkpoint --model draft --work "$WORK" \
      --tokenizer "$BUNDLE/data/llama2-tokenizer.model" >> "$WORK/model.log" 2>&1 || note "draft checkpoint FAILED"
  fi
  wait $build_pid && note "build done: $(cat $WORK/build.json)" || { note "build FAILED: $(tail -5 $WORK/build.log)"; finish; return 1; }
  if needs_7b; then
    .venv/bin/python bench/gpu/prepare_model.py quantize --work "$WORK" >> "$WORK/model.log" 2>&1 \
      && note "f16 + Q4_K_M done" || { note "convert/quantize FAILED"; finish; return 1; }
  fi
  if has speculative; then
    .venv/bin/python bench/gpu/prepare_model.py quantize --model draft --work "$WORK" >> "$WORK/model.log" 2>&1 \
      && note "draft Q4_K_M done" || note "draft convert/quantize FAILED"
  fi
  .venv/bin/python -c 'import sys; sys.path.insert(0, "bench/gpu"); import json, _gpuinfo; print(json.dumps(_gpuinfo.gpu_info()))' \
    > "$WORK/gpu-info.json"
  if has engine-loop; then  # before the 7B's benches, on a quiet machine: a small model's steps are short
    bash bench/gpu/server_benches.sh engine-loop > "$WORK/engine-loop.log" 2>&1 && note "engine-loop done" \
      || note "engine-loop FAILED (engine-loop.log)"
  fi
  mkdir -p "$WORK/llama-bench-raw"
  if has llama-bench; then
    .venv/bin/python bench/gpu/llama_bench.py --force --bin "$WORK/build/bin/llama-bench" --model "$MODEL" \
      --build "$WORK/build.json" --commit "$WORK/src/llama_cpp_python-$PIN/LLAMA_CPP_COMMIT" \
      --raw "$WORK/llama-bench-raw" --out "$WORK/gpu-llama-bench.json" > "$WORK/llama-bench.log" 2>&1 \
      && note "llama-bench done" || note "llama-bench FAILED"
  fi
  if has tests; then
    LLAMA_TEST_GPU_MODEL=$ROOT/$MODEL .venv/bin/python -m pytest -m gpu tests/server/test_gpu_offload.py -p no:cacheprovider -v \
      > "$WORK/gpu-pytest.log" 2>&1; note "gpu tests: $(tail -1 $WORK/gpu-pytest.log)"
  fi
  if has offload; then
    .venv/bin/python bench/gpu/offload_check.py --force --model "$MODEL" --out "$WORK/gpu-offload.json" > "$WORK/offload.log" 2>&1 \
      && note "offload check done" || note "offload check FAILED"
  fi
  if has moderation; then  # a Llama Guard 3-1B-shaped guard beside the 7B: bench/moderation.py
    .venv/bin/python bench/gpu/prepare_model.py quantize --model guard --work "$WORK" >> "$WORK/model.log" 2>&1 \
      && note "guard Q4_K_M done" || note "guard convert/quantize FAILED"
    .venv/bin/python bench/moderation.py --model "$MODEL" --guard "$WORK/llama-guard-3-1b-shape-random.Q4_K_M.gguf" \
      --n-gpu-layers -1 --requests 16 --out "$WORK/gpu-moderation.json" > "$WORK/moderation.log" 2>&1 \
      && note "moderation done" || note "moderation FAILED (moderation.log)"
  fi
  for stage in serve-gpu concurrency cache-ab serve-split profile side-by-side cluster speculative speculative-smol; do
    has $stage || continue
    bash bench/gpu/server_benches.sh $stage > "$WORK/$stage.log" 2>&1 && note "$stage done" || note "$stage FAILED ($stage.log)"
  done
  finish
}

finish() {
  note "DONE"
}

collect() {
  local dest=$1
  mkdir -p "$dest"
  cp "$WORK"/gpu-*.json "$WORK/gpu-pytest.log" "$dest/" 2>/dev/null
  tar -C "$WORK" -czf "$dest/logs.tar.gz" --exclude='*.gguf' --exclude='*.safetensors' --exclude=build --exclude=src --exclude='ckpt*' --exclude='*.partial' . 2>/dev/null
  ls -la "$dest"
}

case "${1:-}" in
  start)
    mkdir -p "$WORK"
    # The server as it was (engine-loop's before-pN column): carried with this call only, so kept here.
    [[ -d $BUNDLE/before/server ]] && rm -rf "$WORK/before" && cp -r "$BUNDLE/before" "$WORK/before"
    if [[ -f $WORK/pipeline.pid ]] && kill -0 "$(cat $WORK/pipeline.pid)" 2>/dev/null; then
      echo "a run is already under way (pid $(cat $WORK/pipeline.pid))"; exit 0
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    [[ -x .venv/bin/python ]] || setup_venv || { echo "venv setup failed"; exit 1; }
    setsid bash "$0" pipeline > "$WORK/pipeline.log" 2>&1 < /dev/null & echo $! > "$WORK/pipeline.pid"
    echo "started pid $(cat $WORK/pipeline.pid); poll with: bash $0 wait DIR" ;;
  pipeline) pipeline ;;
  wait)
    dest=${2:?wait DIR [SECONDS]}; limit=${3:-540}; t0=$SECONDS
    until grep -q DONE "$WORK/progress.log" 2>/dev/null || (( SECONDS - t0 >= limit )); do sleep 10; done
    cat "$WORK/progress.log"; tail -3 "$WORK/build.log" 2>/dev/null | cut -c1-300
    grep -q DONE "$WORK/progress.log" 2>/dev/null && collect "$dest" ;;
  collect) collect "${2:?collect DIR}" ;;  # what is there so far, finished or not
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
