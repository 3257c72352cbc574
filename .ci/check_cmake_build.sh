#!/usr/bin/env bash
# Builds the op library for C++ users with CMake (CMakeLists.txt: CPU kernels, no Python) into a
# temporary directory, then loads it into Python with torch.ops.load_library and checks one
# masked_perturb_forward call against the formula written out in plain PyTorch.
# Run from the repository root. Environment: PYTHON (default python), CMAKE (default cmake),
# MAX_JOBS (default 2), CUDA_HOME (toolkit root; find_package(Torch) of a CUDA build of torch
# looks for the toolkit even for this CPU-only library).
set -euo pipefail

PYTHON="${PYTHON:-python}"
CMAKE="${CMAKE:-cmake}"
REPO="$(pwd)"
[[ -f "$REPO/CMakeLists.txt" ]] || { echo "check_cmake_build: run from the repository root" >&2; exit 2; }

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/reprogram_ext_cmake.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

TORCH_PREFIX="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
cuda_args=()
if [[ -z "${CUDA_HOME:-}" ]]; then
  for root in /usr/local/cuda /usr/local/cuda-*; do
    if [[ -x "$root/bin/nvcc" ]]; then CUDA_HOME="$root"; break; fi
  done
fi
if [[ -n "${CUDA_HOME:-}" ]]; then
  cuda_args=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

echo "check_cmake_build: configuring and building reprogram_ext_ops (CPU) in $BUILD"
if ! { "$CMAKE" -S "$REPO" -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DREPROGRAM_EXT_WITH_CUDA=OFF "${cuda_args[@]}" \
       && "$CMAKE" --build "$BUILD" -j "${MAX_JOBS:-2}"; } >"$BUILD/cmake.log" 2>&1; then
  tail -n 60 "$BUILD/cmake.log" >&2
  echo "check_cmake_build: FAILED: the CMake build did not configure / build" >&2
  exit 1
fi
LIB="$(ls "$BUILD"/libreprogram_ext_ops.so)"
if nm -D --undefined-only "$LIB" | grep -q " Py"; then
  echo "check_cmake_build: FAILED: $LIB needs Python symbols" >&2
  exit 1
fi

# Load it in a process that does not import reprogram_ext (its _C would register the same ops).
"$PYTHON" - "$LIB" <<'PY'
import sys

import torch
import torch.nn.functional as F

torch.ops.load_library(sys.argv[1])
torch.manual_seed(0)
# ILM-VP-like call: a 3x5x6 image at offset (2, 3) on a 9x11 canvas, sigmoid program, a soft mask
# at half resolution (mask_scale 2), normalisation after.
B, C, H, W, oy, ox, s = 2, 3, 9, 11, 2, 3, 2
x = torch.rand(B, C, 5, 6)
delta = torch.randn(1, C, H, W)
mask = torch.rand(1, 1, (H + s - 1) // s, (W + s - 1) // s)
mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
norm = torch.stack([mean, 1 / std]).contiguous()
out = torch.ops.reprogram_ext.masked_perturb_forward(
    x, delta, mask, [oy, ox], norm, [5, 6], "none", "sigmoid", "add", "after", None, s)

placed = F.pad(x, (ox, W - 6 - ox, oy, H - 5 - oy))
m = mask.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)[..., :H, :W]
expected = (placed + torch.sigmoid(delta) * m - mean.view(1, C, 1, 1)) / std.view(1, C, 1, 1)
torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
print(f"  torch.ops.reprogram_ext.masked_perturb_forward from {sys.argv[1].rsplit('/', 1)[-1]}: "
      f"matches the formula (max abs err {(out - expected).abs().max().item():.2e})")
PY
echo "check_cmake_build: OK"
