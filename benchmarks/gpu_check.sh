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
# Then it builds llama.cpp's own llama-bench and llama-batched-bench from the SAME CUDA build
# tree (scikit-build-core's build-dir, reconfigured with LLAMA_BUILD_TOOLS=ON: only the tools
# and llama.cpp's common library compile, the CUDA kernels are reused) and gpu_check.py
# compares our generation and batched tokens/s with them. Budget: BUDGET seconds (600) in all;
# each phase prints its elapsed time, the tools are skipped when under TOOLS_MIN_S (150) is left.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check-out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-600}
TOOLS_MIN_S=${TOOLS_MIN_S:-150}
VERSION=${VERSION:-0.3.36}
SRC=/tmp/b/llama_cpp_python-$VERSION
BUILD=/tmp/b/build
t0=$(date +%s)
phase() { echo "== $1: $(( $(date +%s) - t0 )) s elapsed of ${BUDGET} s"; }
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
REPO=$PWD
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
mkdir -p /tmp/b && tar xzf .dev/llama_slim.tar.gz -C /tmp/b
cd "$SRC" || exit 1
export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DLLAVA_BUILD=off -DGGML_NATIVE=on -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off -DLLAMA_BUILD_TOOLS=off -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-$(nproc)}
phase "building llama-cpp-python (CUDA)"
python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/site \
  --config-settings=build-dir="$BUILD" . > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
cd "$REPO" || exit 1
phase "llama-cpp-python built"
TOOLS=""
if [ "${SKIP_TOOLS:-0}" = 1 ]; then
  echo "SKIP_TOOLS=1: no llama-bench/llama-batched-bench"
elif [ "$(left)" -lt "$TOOLS_MIN_S" ]; then
  echo "only $(left) s left (< TOOLS_MIN_S=$TOOLS_MIN_S): skipping llama-bench/llama-batched-bench"
elif [ ! -f "$BUILD/CMakeCache.txt" ]; then
  echo "no CMake build tree at $BUILD (build-dir not honoured?): skipping the tools"
else
  phase "building llama-bench, llama-batched-bench from the same tree"
  # The same cache (CUDA on, same architectures); tools on, server/UI off (not in the slim tarball).
  if cmake -S "$SRC" -B "$BUILD" -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
       -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
       > "$OUT/tools.log" 2>&1 \
     && timeout "$(( $(left) > 60 ? $(left) - 60 : 1 ))" \
       cmake --build "$BUILD" --target llama-bench llama-batched-bench -j "$CMAKE_BUILD_PARALLEL_LEVEL" \
       >> "$OUT/tools.log" 2>&1; then
    TOOLS=$(dirname "$(find "$BUILD" -type f -name llama-batched-bench -perm -u+x | head -1)")
    echo "tools in $TOOLS"
  else
    echo "tools build failed or ran out of time (see $OUT/tools.log):"; tail -15 "$OUT/tools.log"
  fi
  phase "tools done"
fi
export PYTHONPATH=/tmp/site:$PWD:$PWD/runtime
export LLAMA_TOOLS_DIR=$TOOLS
GPU_CHECK_DEADLINE=$(( t0 + BUDGET - 10 ))
export GPU_CHECK_DEADLINE
python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/bench.log"
phase "total"
