# laptop-llama's server in a container: gunicorn + llama.cpp, models mounted at /app/models.
#
#   docker build -t laptop-llama:local .                                     # CPU (AVX2 and up)
#   docker build --build-arg BACKEND=cuda -t laptop-llama:local-cuda .       # NVIDIA GPUs
#   docker run --rm -p 8000:8000 -v "$PWD/models:/app/models" --stop-timeout 330 laptop-llama:local
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/models:/app/models" laptop-llama:local-cuda
#
# Settings are LLAMA_SERVER_* variables (docker run -e LLAMA_SERVER_MODEL=/app/models/x.gguf).
# SIGTERM drains: gunicorn (PID 1) stops accepting and lets answers finish for up to
# REQUEST_TIMEOUT + 15 s, so give `docker stop` that long (--stop-timeout / -t).
#
# Linted with hadolint in the test suite. Two rules are waived where they appear: DL3008
# (pin apt package versions: the base image's tag pins the distribution, and exact Debian
# versions vanish from the archive with each point release) and DL3006 (tag the image: on
# `FROM build-${BACKEND}`, which names one of the stages below, not an image).
ARG BACKEND=cpu
ARG CUDA_VERSION=12.6.3

# ---- Build stages: compile llama.cpp (through llama-cpp-python) into /opt/venv.
FROM python:3.11-slim-bookworm AS build-cpu
# Portable: AVX2/FMA/F16C (x86-64 CPUs of the last decade), not the build machine's every
# instruction (-march=native). Named explicitly: with SOURCE_DATE_EPOCH set, ggml would drop them.
ARG CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ENV CMAKE_ARGS="${CPU_FLAGS}"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build-cuda
# 75 Turing, 80 A100, 86 RTX 30xx, 89 RTX 40xx / L4, 90 H100
ARG CUDA_ARCHS="75;80;86;89;90"
ARG CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ENV CMAKE_ARGS="${CPU_FLAGS} -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS}"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM build-${BACKEND} AS build
WORKDIR /src
COPY requirements.txt .
COPY deploy/llama_wheel.sh deploy/llama_wheel.sh
COPY deploy/llama-patches deploy/llama-patches
# Only the runtime part of requirements.txt: everything above its "# Tests" line. llama.cpp is
# compiled by the same script as `make install` runs, into a BuildKit cache mount (BuildKit is
# Docker's builder since 23.0), keyed by the pin, CMAKE_ARGS and the compiler: a change to another
# requirement rebuilds this layer, not llama.cpp.
RUN --mount=type=cache,target=/root/.cache/laptop-llama \
    sed '/^# Tests/,$d' requirements.txt > runtime.txt \
 && python3 -m venv /opt/venv \
 && CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" deploy/llama_wheel.sh /opt/venv/bin/python \
      "$(grep '^llama-cpp-python==' runtime.txt)" \
 && /opt/venv/bin/pip install --no-cache-dir -r runtime.txt

# ---- Runtime stages: the same Python as the build stage (the venv points at it), no compilers.
FROM python:3.11-slim-bookworm AS runtime-cpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS runtime-cuda
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 python3 \
 && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM runtime-${BACKEND}
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY server/ server/
COPY deploy/healthcheck.py deploy/healthcheck.py
# A fixed, unprivileged uid (Kubernetes' runAsNonRoot checks it is not 0). It owns only
# models/, where the small default model is assembled when no model file is mounted.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home llama \
 && mkdir -p /app/models && chown llama:llama /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLAMA_SERVER_HOST=0.0.0.0 \
    LLAMA_SERVER_PORT=8000
USER 10001
VOLUME ["/app/models"]
EXPOSE 8000
# Healthy once the model is loaded; loading a 7B model from a slow disk takes a while.
HEALTHCHECK --interval=10s --timeout=6s --start-period=300s --retries=3 CMD ["python", "deploy/healthcheck.py"]
STOPSIGNAL SIGTERM
# Exec form: `python -m server` execs gunicorn, which is then PID 1 and receives SIGTERM itself.
CMD ["python", "-m", "server"]
