#!/usr/bin/env bash
# Our server on the GPU, on the model that run_device.sh made: the stages it runs after the build.
#
#   bash bench/gpu/server_benches.sh serve-gpu     # serve.py, all layers (flash attention auto, off) and auto
#   bash bench/gpu/server_benches.sh serve-split   # serve.py at 0, 8, 16 layers and auto at 2/4/6 GB budgets
#   bash bench/gpu/server_benches.sh concurrency   # concurrency.py: ours vs CUDA llama-server, 8 slots, all layers,
#                                                  # CONC_ROUNDS (30) rounds within CONC_BUDGET_S (450) seconds
#   bash bench/gpu/server_benches.sh cache-ab      # concurrency with our CACHE_RAM at 0 and at 2048
#   bash bench/gpu/server_benches.sh profile       # py-spy on our server while one client streams
#   bash bench/gpu/server_benches.sh side-by-side  # llama-bench tg128, our server (repeat penalty 1.1, 1.0), llama-bench
#   bash bench/gpu/server_benches.sh speculative   # speculative.py: ours and llama-server, off / ngram / the model as its
#                                                  # own draft / a 4-layer random draft, rounds for SPEC_BUDGET_S (420) s or until SPEC_END_AT
#   bash bench/gpu/server_benches.sh cluster       # cluster.py: one replica, no nginx, PARALLEL 8, 1-16 clients
#   bash bench/gpu/server_benches.sh speculative-smol  # SmolLM2 (real weights, as engine-loop) on the GPU, every pass on a
#                                                  # fresh server: ours and llama-server, off / ngram, 1 and 4 clients,
#                                                  # T=0 then T=0.8 (SPEC_TEMPS), rounds for SPEC_BUDGET_S (240) s each
#   bash bench/gpu/server_benches.sh engine-loop   # SmolLM2 (real weights, in two parts .gpu/smol{1,2}/part, one carried per call) on the GPU:
#                                                  # concurrency.py ours, BEFORE (another checkout) and llama-server, 8 slots,
#                                                  # 1-16 clients, rounds for LOOP_BUDGET_S (300) s; then loop_profile.py at 1, 8, 16
#
# Outputs under bench/.work/gpu/ (serve/*.json, gpu-*.json, profile-*.txt), gathered by
# `run_device.sh wait`; bench/gpu/summarize_server.py turns them into bench/results/gpu-server.json.
# Threads: every core, as llama-bench ran (its partial-offload rows used 16 threads).
set -uo pipefail
cd "$(dirname "$0")/../.."
WORK=bench/.work/gpu
MODEL=$WORK/llama2-7b-random.Q4_K_M.gguf
DRAFT=$WORK/llama2-draft-4l-random.Q4_K_M.gguf
PIN=$(sed -n 's/^llama-cpp-python==//p' requirements.txt)
PY=.venv/bin/python
THREADS=$(nproc)
export PYTHONUNBUFFERED=1

serve_one() {  # NAME REPS SERVE-ARGS...
  local name=$1 reps=$2; shift 2
  echo "== serve $name: $*"
  $PY bench/serve.py --model "$MODEL" --tokens 128 --reps "$reps" --threads "$THREADS" \
    --results "$WORK/serve/$name.json" "$@" || echo "serve $name FAILED (rc $?)"
}

serve_gpu() {
  mkdir -p "$WORK/serve"
  serve_one all 7 --n-gpu-layers -1
  serve_one all-fa-off 7 --n-gpu-layers -1 --flash-attn off
  serve_one auto 7 --n-gpu-layers auto
}

serve_split() {
  # Few reps: these decode at 15-100 t/s, and the spread between reps is small.
  mkdir -p "$WORK/serve"
  for n in 0 8 16; do serve_one "ngl$n" 3 --n-gpu-layers "$n"; done
  for mb in 2048 4096 6144; do serve_one "auto-$mb" 3 --n-gpu-layers auto --vram-budget-mb "$mb"; done
}

link_llama_server() {
  # The CUDA llama-server from the same build as the library, where concurrency.py looks for it.
  local bin=bench/.work/llama-server-$PIN/bin
  [[ -x $WORK/build/bin/llama-server ]] || { echo "no CUDA llama-server in $WORK/build/bin"; return 1; }
  mkdir -p "$bin" && ln -sf "$PWD/$WORK/build/bin/llama-server" "$bin/llama-server"
}

concurrency() {
  # Ours against llama-server only (each extra column lengthens every round), end of sequence ignored
  # on both so each request makes 128 tokens, and as many interleaved rounds as CONC_BUDGET_S allows
  # (about 15 s a round here; 30 rounds give the median ratio's 95% interval from the 10th to 21st).
  link_llama_server || return 1
  $PY bench/concurrency.py --model "$MODEL" --servers ours-pN,llama-server-pN \
    --parallel 8 --clients 1,4,8 --requests 3 --rounds "${CONC_ROUNDS:-30}" --budget-s "${CONC_BUDGET_S:-450}" \
    --max-tokens 128 --threads "$THREADS" \
    --n-gpu-layers -1 --flash-attn auto --no-plot --force --out "$WORK/gpu-concurrency.json"
}

cache_ab() {
  # Our RAM prompt cache on and off (CACHE_RAM 2048 and 0), each beside llama-server (whose own
  # --cache-ram stays at its default), every layer on the GPU, as the concurrency stage.
  link_llama_server || return 1
  for mib in 0 2048; do
    LLAMA_SERVER_CACHE_RAM=$mib $PY bench/concurrency.py --model "$MODEL" --servers ours-pN,llama-server-pN \
      --parallel 8 --clients 1,4,8 --requests 3 --rounds "${CONC_ROUNDS:-15}" --budget-s "${CONC_BUDGET_S:-240}" \
      --max-tokens 128 --threads "$THREADS" \
      --n-gpu-layers -1 --flash-attn auto --no-plot --force --out "$WORK/gpu-concurrency-cache-ram-$mib.json"
  done
}

profile() {
  $PY bench/gpu/profile_server.py --model "$MODEL" --threads "$THREADS" --out "$WORK/profile-raw.txt"
}

side_by_side() {
  # Single-stream decode against llama-bench on the same machine in one go, llama-bench before and
  # after (clocks drift); depth 64 is about our prompt. Penalty 1.0 removes the Python penalty work.
  mkdir -p "$WORK/side"
  local lb=$WORK/build/bin/llama-bench
  $lb -m "$MODEL" -ngl 99 -fa 1 -p 0 -n 128 -d 0,64 -r 5 -o json > "$WORK/side/llama-bench-before.json"
  for rp in 1.1 1.0; do
    $PY bench/serve.py --model "$MODEL" --n-gpu-layers -1 --tokens 128 --reps 9 --threads "$THREADS" \
      --repeat-penalty $rp --results "$WORK/side/serve-all-rp$rp.json"
  done
  $lb -m "$MODEL" -ngl 99 -fa 1 -p 0 -n 128 -d 0,64 -r 5 -o json > "$WORK/side/llama-bench-after.json"
}

speculative() {
  # Every layer of both models on the GPU (99: "all" to both servers; llama-server's -1 means "fit"),
  # 4 slots, answers capped at 128 tokens, DRAFT_MAX 16 on every speculative side. Eight servers stay
  # up together: 1024 tokens of context per slot keeps them within one 80 GB card.
  link_llama_server || return 1
  # SPEC_END_AT (epoch seconds): start no round after it, whatever the stages before took.
  local budget=${SPEC_BUDGET_S:-420}
  [[ -n ${SPEC_END_AT:-} ]] && budget=$(( SPEC_END_AT - $(date +%s) )) && (( budget < 120 )) && budget=120
  local sides=ours-off,ours-ngram,ours-draft-self,ours-draft
  sides+=,llama-server-off,llama-server-ngram,llama-server-draft-self,llama-server-draft
  $PY bench/speculative.py --model "$MODEL" --draft-model "$DRAFT" --sides "$sides" \
    --clients 1,4 --parallel 4 --ctx 1024 --max-tokens 128 --draft-max 16 --rounds 30 \
    --budget-s "$budget" --threads "$THREADS" --n-gpu-layers 99 --flash-attn auto \
    --note "one GPU, random-weights Llama-2-7B-shaped Q4_K_M; draft: a 4-layer random Llama of the same vocabulary" \
    --force --out "$WORK/gpu-speculative.json"
  local rc=$?
  [[ $rc == 0 ]] && add_gpu_info "$WORK/gpu-speculative.json"
  cp bench/.work/spec-*.log "$WORK/" 2>/dev/null
  return $rc
}

speculative_smol() {
  # Issue #23: prompt lookup where each extra row costs almost nothing. Every pass on a fresh
  # server (no prompt seen before), greedy and then sampled with one seed on both servers.
  link_llama_server || return 1
  local smol; smol=$(smollm2) || { echo "$smol"; return 1; }
  local t
  for t in ${SPEC_TEMPS:-0 0.8}; do
    $PY bench/speculative.py --model "$smol" --sides ours-off,ours-ngram,llama-server-off,llama-server-ngram \
      --clients 1,4 --parallel 4 --ctx 2048 --max-tokens 256 --draft-max 16 --rounds 40 --fresh \
      --temperature "$t" --seed 7 --budget-s "${SPEC_BUDGET_S:-240}" --threads "$THREADS" --n-gpu-layers 99 \
      --note "one GPU, SmolLM2-135M-Instruct Q4_1 (real weights), every layer on it; a fresh server per timed pass" \
      --force --out "$WORK/gpu-speculative-smollm2-t$t.json" || return 1
    add_gpu_info "$WORK/gpu-speculative-smollm2-t$t.json"
  done
}

cluster() {
  # One replica straight on its port (no nginx here): what one GPU serves, to size a deployment.
  LLAMA_SERVER_N_GPU_LAYERS=-1 $PY bench/cluster.py --model "$MODEL" --replicas '' --parallel 8 \
    --clients 1,4,8,16 --requests 4 --max-tokens 128 --rounds "${CLUSTER_ROUNDS:-8}" \
    --force --out "$WORK/gpu-cluster.json" || return 1
  add_gpu_info "$WORK/gpu-cluster.json" n_gpu_layers=-1
}

smollm2() {  # the real SmolLM2 file, joined from the parts each call's working tree could carry
  # A command may bring only one part (64 MiB at a time), and what it brought may be gone by the
  # next: each part is copied under $WORK as it comes, and joined once both are there.
  local out=$WORK/smollm2-135m-instruct-q4_1.gguf waited=0
  if [[ ! -f $out ]]; then
    until [[ -f $WORK/smol1.part && -f $WORK/smol2.part ]]; do
      for i in 1 2; do
        [[ -f .gpu/smol$i/part && ! -f $WORK/smol$i.part ]] && cp .gpu/smol$i/part "$WORK/smol$i.part.tmp" \
          && mv "$WORK/smol$i.part.tmp" "$WORK/smol$i.part"
      done
      [[ -f .gpu/smol1/sha256 ]] && cp .gpu/smol1/sha256 "$WORK/smol.sha256"
      [[ -f $WORK/smol1.part && -f $WORK/smol2.part ]] && break
      sleep 5; waited=$((waited + 5)); (( waited < 900 )) || { echo "the SmolLM2 parts did not come"; return 1; }
    done
    cat "$WORK/smol1.part" "$WORK/smol2.part" > "$out.partial" && mv "$out.partial" "$out"
  fi
  local want=${SMOL_SHA256:-$(cat "$WORK/smol.sha256" 2>/dev/null)}
  [[ -z $want || $(sha256sum "$out" | cut -d' ' -f1) == "$want" ]] || { echo "$out: sha256 differs"; rm -f "$out"; return 1; }
  echo "$out"
}

engine_loop() {
  # Issue #26: the engine's own time with a small model whose steps are short on the GPU. Every
  # question new (--fresh-questions), so no prompt cache or draft pool has seen it.
  link_llama_server || return 1
  local smol; smol=$(smollm2) || { echo "$smol"; return 1; }
  local before=${BEFORE:-$PWD/$WORK/before} sides=(--servers ours-pN,llama-server-pN)  # run_device.sh start copies it
  if [[ -d $before/server ]]; then  # the server as it was, for the before-pN column
    [[ -x $before/.venv/bin/python ]] || ln -sfn "$PWD/.venv" "$before/.venv"
    sides=(--servers ours-pN,before-pN,llama-server-pN --before "$before")
  fi
  $PY bench/concurrency.py --model "$smol" "${sides[@]}" \
    --parallel 8 --clients "${LOOP_CLIENTS:-1,4,8,16}" --requests 3 --rounds 40 --budget-s "${LOOP_BUDGET_S:-300}" \
    --max-tokens 128 --threads "$THREADS" --ctx 1024 --fresh-questions \
    --n-gpu-layers -1 --flash-attn auto --no-plot --force --out "$WORK/gpu-engine-loop.json" || return 1
  add_gpu_info "$WORK/gpu-engine-loop.json"
  $PY bench/loop_profile.py --model "$smol" --clients "${LOOP_PROFILE_CLIENTS:-1,8,16}" --parallel 8 --threads "$THREADS" --n-gpu-layers -1 \
    --seconds "${LOOP_PROFILE_S:-8}" --note "one GPU, SmolLM2-135M-Instruct Q4_1, every layer on it" \
    --out "$WORK/gpu-loop-profile.json"
}

add_gpu_info() {  # FILE [SETTING=VALUE]: the benches record the CPU host; add the GPU (and a setting they ran with)
  $PY - "$1" "$WORK/gpu-info.json" "${2:-}" <<'EOF'
import json, os, sys
doc = json.load(open(sys.argv[1]))
doc["gpu"] = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else None
if sys.argv[3]:
    key, value = sys.argv[3].split("=")
    doc["settings"][key] = json.loads(value)
tmp = sys.argv[1] + ".tmp"
json.dump(doc, open(tmp, "w"), indent=1)
os.replace(tmp, sys.argv[1])
EOF
}

case "${1:-}" in
  serve-gpu) serve_gpu ;;
  serve-split) serve_split ;;
  concurrency) concurrency ;;
  profile) profile ;;
  side-by-side) side_by_side ;;
  cache-ab) cache_ab ;;
  speculative) speculative ;;
  cluster) cluster ;;
  engine-loop) engine_loop ;;
  speculative-smol) speculative_smol ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
