#!/usr/bin/env bash
# Build llama.cpp's own reference tools (llama-batched-bench, llama-bench) from the vendored
# llama.cpp of the INSTALLED llama-cpp-python, so benchmarks compare against the same code.
#
# Usage: benchmarks/llama_cpp_tools.sh [--tarball SDIST.tar.gz] [--python PY] [--cuda]
#                                      [--cuda-arch N] [--cache DIR] [--jobs N] [--dry-run]
#   --tarball   an sdist of llama-cpp-python (or a slimmed one with vendor/llama.cpp, such as
#               .dev/llama_slim.tar.gz); default: `pip download` of the installed version.
#   --python    the interpreter whose llama-cpp-python sets the version and the OpenMP choice
#               (default: $PYTHON, else python3).
#   --cuda      build with -DGGML_CUDA=ON (cache key <version>-cuda); --cuda-arch sets
#               CMAKE_CUDA_ARCHITECTURES (default: native).
#   --cache     cache root (default ~/.cache/local-llm-integrations/llama-tools).
#   --dry-run   print the plan (version, source, cmake command) and build nothing.
# Output: progress on stderr; the LAST line on stdout is the folder holding the two binaries,
# so `BIN=$(benchmarks/llama_cpp_tools.sh)` works. A second run reuses the build (idempotent:
# the binaries are rebuilt only if the cmake options changed or they are missing).
#
# Options that matter, matched with llama-cpp-python 0.3.x (its CMakeLists/pyproject):
# Release build (scikit-build-core's default), LLAMA_BUILD_COMMON=ON, LLAMA_CURL=OFF,
# GGML_NATIVE=ON (llama.cpp's default for a local build) and GGML_OPENMP as in the installed
# libggml-cpu.so (linked to libgomp or not). Static libraries here only change the linking.
set -euo pipefail

PY=${PYTHON:-python3}
TARBALL=""
CUDA=0
CUDA_ARCH=native
CACHE_ROOT=${LLAMA_TOOLS_CACHE:-"$HOME/.cache/local-llm-integrations/llama-tools"}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
DRY=0
TARGETS=(llama-batched-bench llama-bench)

log() { printf '[llama-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tarball) TARBALL=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --cuda) CUDA=1; shift ;;
    --cuda-arch) CUDA_ARCH=$2; shift 2 ;;
    --cache) CACHE_ROOT=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))') \
  || die "llama-cpp-python is not installed for $PY (pass --python)"
LIBDIR=$("$PY" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llama_cpp"); print(pathlib.Path(s.origin).parent / "lib")')

# OpenMP as the installed build: llama.cpp's thread pool differs with and without it.
OPENMP=ON
if [ -e "$LIBDIR/libggml-cpu.so" ] && command -v ldd >/dev/null; then
  # (no `ldd | grep -q` under pipefail: grep's early exit makes ldd's SIGPIPE fail the pipe)
  DEPS=$(ldd "$LIBDIR/libggml-cpu.so" 2>/dev/null || true)
  case "$DEPS" in *libgomp*|*libomp*) OPENMP=ON ;; *) OPENMP=OFF ;; esac
fi

KEY=$VERSION
[ "$CUDA" = 1 ] && KEY=$VERSION-cuda
DIR=$CACHE_ROOT/$KEY
BIN=$DIR/bin
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

OPTS=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DGGML_NATIVE=ON -DGGML_OPENMP="$OPENMP" -DBUILD_SHARED_LIBS=OFF
)
if [ "$CUDA" = 1 ]; then
  OPTS+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DGGML_CUDA_FA=OFF
         -DGGML_CUDA_NCCL=OFF)
else
  OPTS+=(-DGGML_CUDA=OFF)
fi
STAMP="version=$VERSION ${OPTS[*]}"

log "llama-cpp-python $VERSION (installed for $PY, OpenMP $OPENMP), cache $DIR"
if [ -x "$BIN/llama-batched-bench" ] && [ -x "$BIN/llama-bench" ] \
   && [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$STAMP" ]; then
  log "reusing the build in $BIN"
  echo "$BIN"
  exit 0
fi

SRC=$DIR/src/llama_cpp_python-$VERSION
if [ "$DRY" = 1 ]; then
  log "dry run: source ${TARBALL:-"pip download llama-cpp-python==$VERSION"} -> $SRC"
  log "dry run: cmake -S $SRC/vendor/llama.cpp -B $DIR/build ${GEN[*]} ${OPTS[*]}"
  log "dry run: cmake --build $DIR/build --target ${TARGETS[*]} -j $JOBS"
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR/src"
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  if [ -z "$TARBALL" ]; then
    log "downloading the sdist of llama-cpp-python $VERSION"
    # (pip prepares the sdist's metadata in an isolated build environment: scikit-build-core)
    "$PY" -m pip download --quiet --no-deps --no-binary :all: \
      "llama-cpp-python==$VERSION" -d "$DIR/sdist" >&2 \
      || die "pip download failed; pass --tarball PATH to an sdist"
    TARBALL=$(ls "$DIR"/sdist/llama_cpp_python-"$VERSION".tar.gz)
  fi
  [ -f "$TARBALL" ] || die "no tarball at $TARBALL"
  log "unpacking $TARBALL"
  tar xzf "$TARBALL" -C "$DIR/src"
  [ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ] \
    || die "$TARBALL has no llama_cpp_python-$VERSION/vendor/llama.cpp (another version?)"
fi

t0=$(date +%s)
log "configuring (${GEN[*]:-make})"
cmake -S "$SRC/vendor/llama.cpp" -B "$DIR/build" "${GEN[@]}" "${OPTS[@]}" \
  > "$DIR/configure.log" 2>&1 || { tail -30 "$DIR/configure.log" >&2; die "cmake configure failed"; }
log "building ${TARGETS[*]} with $JOBS jobs (log: $DIR/build.log)"
cmake --build "$DIR/build" --target "${TARGETS[@]}" -j "$JOBS" > "$DIR/build.log" 2>&1 \
  || { tail -30 "$DIR/build.log" >&2; die "build failed"; }
mkdir -p "$BIN"
for t in "${TARGETS[@]}"; do cp "$DIR/build/bin/$t" "$BIN/$t"; done
echo "$STAMP" > "$DIR/stamp"
log "built in $(( $(date +%s) - t0 )) s: $BIN"
echo "$BIN"
