#!/usr/bin/env bash
# Type-check the crate with `--features cuda` on a machine that has no GPU and
# no system CUDA toolkit, using the CUDA toolkit pieces NVIDIA publishes on PyPI.
#
# Why CUDA 13 and not 12: the `nvidia-cuda-nvcc-cu12` wheels (every 12.x
# release) ship only `ptxas` and libnvvm -- no `nvcc` driver, no `cicc`, no
# `cudafe++` -- so they cannot compile .cu files. The CUDA 13 wheels
# (`nvidia-cuda-nvcc`, `nvidia-nvvm`, `nvidia-cuda-crt`, `nvidia-cuda-runtime`,
# `nvidia-cuda-cccl`) all install into one prefix, site-packages/nvidia/cu13,
# laid out like a real toolkit (bin/, include/, include/cccl, lib/, nvvm/), and
# its bin/nvcc.profile points nvcc at those directories.
#
# Why a toolkit is needed at all for `cargo check`: build scripts run during
# check. candle-kernels' build.rs (via the `cudaforge` crate) compiles every
# kernel under src/ to PTX and the MoE/GGUF kernels to a static library with
# nvcc, and cudarc's build.rs runs `nvcc --version` to pick its CUDA API
# version (candle enables cudarc's `cuda-version-from-build-system`).
#
# Nothing here needs a GPU: CUDA_COMPUTE_CAP stops cudaforge from calling
# nvidia-smi. Nothing is linked (check only), so libcuda / libcublas / ... are
# not needed; a real `cargo build` of a binary or test would need them.
#
# Usage:  hack/check-cuda.sh [extra cargo check args]
# Env:    CARGO_TARGET_DIR  (default: target/cuda)
#         CUDA_COMPUTE_CAP  (default: 80; 90 = H100/H200)
#         CHECK_CUDA_TARGETS (default: --all-targets; e.g. "--lib")
#         CUDAFORGE_THREADS (default: all cores; parallel nvcc jobs)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# Pinned versions. cudarc 0.19.10 knows CUDA up to 13.4 and panics on any
# newer `nvcc --version`, so nvcc must not float to 13.5+.
CUDA_VER=13.4.92
CCCL_VER=13.3.5.0.6 # header-only CCCL 3.5 (thrust/cub/libcu++), installs into cu13/include/cccl
PY_PKGS=(
  "nvidia-cuda-nvcc==${CUDA_VER}"
  "nvidia-nvvm==${CUDA_VER}"
  "nvidia-cuda-crt==${CUDA_VER}"
  "nvidia-cuda-runtime==${CUDA_VER}"
  "nvidia-cuda-cccl==${CCCL_VER}"
)
VENV="$repo_root/.venv-cuda"

step_start=0
step() { step_start=$(date +%s); echo "==> $*"; }
step_done() { echo "    done in $(( $(date +%s) - step_start ))s"; }

# --- 1. venv with the CUDA toolkit wheels (idempotent) -----------------------
step "CUDA toolkit wheels in $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# pip freeze lines look like "nvidia-cuda-nvcc==13.4.92"; install only what's missing.
installed="$("$VENV/bin/python" -m pip freeze 2>/dev/null || true)"
missing=()
for p in "${PY_PKGS[@]}"; do
  grep -qixF "$p" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${missing[@]}"
else
  echo "    all present, skipping pip install"
fi
step_done

# --- 2. environment ---------------------------------------------------------
step "environment"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CUDA_HOME="$site/nvidia/cu13"
[[ -x "$CUDA_HOME/bin/nvcc" ]] || { echo "nvcc not found under $CUDA_HOME" >&2; exit 1; }
export CUDA_HOME
export CUDA_PATH="$CUDA_HOME" CUDA_ROOT="$CUDA_HOME"   # cudarc link-search roots
export PATH="$CUDA_HOME/bin:$PATH"                      # cudarc runs plain `nvcc`
export NVCC="$CUDA_HOME/bin/nvcc"                       # cudaforge looks here first
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"       # skip nvidia-smi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target/cuda}"
# Host compiler: nvcc 13.4 accepts Debian bookworm's gcc 12 as is. If yours is
# too new, set NVCC_CCBIN=/path/to/g++-N (cudaforge then adds -allow-unsupported-compiler).
nvcc --version | tail -2
echo "    CUDA_HOME=$CUDA_HOME"
echo "    CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
step_done

# --- 3. cargo check -----------------------------------------------------------
# nice: the kernel build (nvcc, ~30 files) is CPU heavy; stay out of the way.
read -r -a targets <<<"${CHECK_CUDA_TARGETS:---all-targets}"
step "cargo check --features cuda ${targets[*]} $*"
nice -n 19 cargo check --features cuda "${targets[@]}" "$@"
step_done
