#!/usr/bin/env bash
# Build llama-cpp-python with CUDA on a GPU machine that has no network, then run
# benchmarks/gpu_check.py. Prepare on a machine with network, in the repo root:
#   mkdir -p .dev && echo /.dev/ >> .git/info/exclude
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sd
#   (unpack; delete vendor/llama.cpp/{docs,models,tools/ui} and the non-CUDA ggml backends
#    to get under 64 MB; repack as .dev/llama_slim.tar.gz)
#   pip download --only-binary=:all: --python-version 3.12 ... -d .dev/whl \
#     gguf diskcache jinja2 pydantic pydantic-core annotated-types typing-inspection platformdirs
# Measured on an H200 (sm_90, 16 cores): the build takes 160 s with flash-attention kernels off.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
mkdir -p /tmp/b && tar xzf .dev/llama_slim.tar.gz -C /tmp/b
cd /tmp/b/llama_cpp_python-0.3.36 || exit 1
export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=off -DGGML_NATIVE=on -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off -DLLAMA_BUILD_TOOLS=off -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=16
python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/site . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
cd - >/dev/null
echo "build done in $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/site:$PWD:$PWD/runtime
python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/bench.log"
echo "total $(( $(date +%s) - t0 )) s"
