#!/usr/bin/env bash
# Build `chatforge` with CUDA on a machine that has no CUDA toolkit (and needs no GPU).
#
#   scripts/build-cuda.sh                 # cargo build --release -p chatforge-cli --features cuda
#   scripts/build-cuda.sh clippy -p chatforge-cli --features cuda --all-targets -- -D warnings
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh   # for an A100 instead of an H100
#   scripts/build-cuda.sh --ptx                 # regenerate crates/train/src/optim/kernels.ptx
#
# What it does:
# 1. Fetches NVIDIA's CUDA 13.0 compiler from PyPI (nvcc, cicc, ptxas, the CUDA runtime headers
#    and libcudart, CCCL's headers): pinned versions, checked against the sha256 below, unpacked
#    once into $CHATFORGE_CUDA_CACHE (default ~/.cache/chatforge-cuda). The wheels are NVIDIA's,
#    under the NVIDIA CUDA Toolkit EULA; nothing of them is committed here.
# 2. Runs cargo (default: `build --release -p chatforge-cli --features cuda`, or the arguments
#    given) with that nvcc on PATH, CUDA_ROOT/CUDA_HOME pointing at it and CUDA_COMPUTE_CAP set
#    (default 90: Hopper), so that candle-kernels compiles its .cu files to PTX and its MoE
#    kernels to a static library for that architecture.
#
# Why 13.0: the PTX is JIT-compiled by the driver of the GPU machine, which only accepts PTX ISA
# versions it knows. The lent H100/H200 machines run driver 580 (CUDA 13.0); PTX from a newer
# nvcc (13.1+) would fail to load there with CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
#
# The binary does not link the CUDA driver, cuBLAS or cuRAND: the vendored candle-core builds
# cudarc with "dynamic-loading" (vendor/README.md), so they are opened at run time from
# LD_LIBRARY_PATH (or the system's library path). candle-kernels links libcudart.so.13, which must
# be findable at run time as well. With PyTorch for CUDA 13 installed, for example:
#
#   export LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))'):$LD_LIBRARY_PATH
#   target/release/chatforge pretrain --world 1 --out runs/base --device cuda
#
# The CUDA build is kept apart from the CPU one: CARGO_TARGET_DIR defaults to target-cuda/.
set -euo pipefail

CUDA_VERSION_TAG=13.0.88
CACHE=${CHATFORGE_CUDA_CACHE:-$HOME/.cache/chatforge-cuda}
ROOT=$CACHE/cuda-$CUDA_VERSION_TAG
WHEELS=$CACHE/wheels
PYTHON=${PYTHON:-python3}

# name==version  sha256 of the manylinux x86-64 wheel
PINS=(
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
)

if [[ "$(uname -m)" != x86_64 ]]; then
  echo "build-cuda.sh: the CUDA wheels pinned here are x86-64 only (this is $(uname -m))" >&2
  exit 1
fi

if [[ ! -x $ROOT/bin/nvcc ]]; then
  mkdir -p "$WHEELS"
  rm -rf "$ROOT.partial"
  mkdir -p "$ROOT.partial"
  for pin in "${PINS[@]}"; do
    spec=${pin% *}
    sum=${pin#* }
    name=${spec%==*}
    version=${spec#*==}
    pattern="$(echo "$name" | tr - _)-$version-*.whl"
    # shellcheck disable=SC2086
    wheel=$(compgen -G "$WHEELS/$pattern" | head -n1 || true)
    if [[ -z $wheel ]]; then
      echo "build-cuda.sh: downloading $spec" >&2
      "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 \
        --python-version 3.11 --implementation py -d "$WHEELS" "$spec"
      wheel=$(compgen -G "$WHEELS/$pattern" | head -n1)
    fi
    echo "$sum  $wheel" | sha256sum --check --quiet - || {
      echo "build-cuda.sh: sha256 mismatch for $wheel (expected $sum); delete it and retry" >&2
      exit 1
    }
    # Every wheel unpacks to nvidia/cu13/{bin,include,lib,nvvm}; merge them into one tree.
    "$PYTHON" - "$wheel" "$ROOT.partial" <<'EOF'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "nvidia/cu13/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        out = os.path.join(dest, info.filename[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(out, mode or 0o644)
EOF
  done
  # `-lcudart` (candle-kernels' build script asks for it) needs the unversioned name.
  ln -sf libcudart.so.13 "$ROOT.partial/lib/libcudart.so"
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
fi

export PATH=$ROOT/bin:$PATH
export CUDA_ROOT=$ROOT CUDA_HOME=$ROOT CUDA_PATH=$ROOT
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# For the linker (cc honours LIBRARY_PATH); RUSTFLAGS stay untouched so that the CPU crates'
# build cache is not invalidated.
export LIBRARY_PATH=$ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target-cuda}

nvcc --version | tail -n 2 >&2
if [[ ${1:-} == --ptx ]]; then
  # Our own kernels (the optimizer's), committed as PTX so that a CUDA build needs no nvcc for
  # them. compute_75 is the oldest target CUDA 13 compiles for; the driver JIT-compiles the PTX
  # for the GPU at hand. -fmad=false: see the note in the .cu file.
  src=$(cd "$(dirname "$0")/.." && pwd)/crates/train/src/optim/kernels.cu
  nvcc --ptx -arch=compute_75 -O3 -fmad=false -o "${src%.cu}.ptx" "$src"
  echo "build-cuda.sh: wrote ${src%.cu}.ptx" >&2
  exit 0
fi
if [[ $# -eq 0 ]]; then
  set -- build --release -p chatforge-cli --features cuda
fi
echo "build-cuda.sh: CUDA_ROOT=$CUDA_ROOT CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo $*" >&2
exec cargo "$@"
