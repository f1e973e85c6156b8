#!/usr/bin/env bash
# Build `ldae` with the `cuda` feature on a machine without a GPU (notes: shared/notes/rust-stack.md).
#
# - nvcc and the CUDA libraries come from PyPI's CUDA 13.0 wheels (they carry the nvcc driver; the cu12 ones do not),
#   installed into a private virtualenv under $LDAE_CUDA_DIR (default .cuda/, git-ignored);
# - libcuda.so (for linking only — the driver of the machine that runs the binary provides the real one) comes from
#   Debian's non-free `libcuda1` package, unpacked with dpkg -x, never installed;
# - the result needs an NVIDIA driver ≥ 580 (CUDA 13.0) at run time.
# Usage: scripts/build-cuda.sh [extra cargo args]     → target/release/ldae with CUDA
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${LDAE_CUDA_DIR:-$PWD/.cuda}
CAP=${CUDA_COMPUTE_CAP:-90}
mkdir -p "$DIR"

if [ ! -x "$DIR/venv/bin/python" ]; then
  python3 -m venv "$DIR/venv"
fi
"$DIR/venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
CUDA_HOME=$("$DIR/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$CUDA_HOME/bin/nvcc" ] || { echo "no nvcc under $CUDA_HOME" >&2; exit 1; }

# Unversioned library names for the linker.
for lib in cublas cublasLt curand nvrtc cudart; do
  f=$(ls "$CUDA_HOME"/lib/lib$lib.so.* 2>/dev/null | sort | head -1 || true)
  [ -n "$f" ] && ln -sf "$(basename "$f")" "$CUDA_HOME/lib/lib$lib.so"
done

# libcuda.so for linking only.
if [ ! -e "$DIR/libcuda/usr/lib/x86_64-linux-gnu/libcuda.so" ] && [ ! -e "$DIR/libcuda/libcuda.so" ]; then
  lists="$DIR/apt"; mkdir -p "$lists/lists/partial" "$lists/parts" "$DIR/deb"
  sed 's/^Components: main$/Components: non-free/' /etc/apt/sources.list.d/debian.sources > "$lists/parts/nonfree.sources"
  o=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$lists/parts" -o "Dir::State::Lists=$lists/lists"
     -o "APT::Architecture=amd64")
  apt-get "${o[@]}" update -qq
  (cd "$DIR/deb" && apt-get "${o[@]}" download libcuda1)
  dpkg -x "$DIR"/deb/libcuda1_*.deb "$DIR/libcuda"
fi
LIBCUDA_DIR=$(dirname "$(find "$DIR/libcuda" -name 'libcuda.so*' | head -1)")
[ -e "$LIBCUDA_DIR/libcuda.so" ] || ln -sf "$(basename "$(ls "$LIBCUDA_DIR"/libcuda.so.* | head -1)")" "$LIBCUDA_DIR/libcuda.so"

export CUDA_HOME CUDA_PATH=$CUDA_HOME CUDA_COMPUTE_CAP=$CAP
export PATH="$CUDA_HOME/bin:$PATH"
export LIBRARY_PATH="$CUDA_HOME/lib:$LIBCUDA_DIR${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $CUDA_HOME/lib -L $LIBCUDA_DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release --features cuda "$@"
echo "built $CARGO_TARGET_DIR/release/ldae (CUDA, sm_$CAP)"
