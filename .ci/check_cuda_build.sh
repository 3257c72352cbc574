#!/usr/bin/env bash
# Proves, on a machine without a GPU, that the CUDA kernels (csrc/<op>/cuda.cu) compile and link:
#   1. builds the extension with REPROGRAM_EXT_CUDA=1 and ptxas -v into a scratch copy of the
#      repository (an in-place CPU build of the working tree is left untouched);
#   2. fails if ptxas reports a non-zero spill for any kernel (or reports nothing at all);
#   3. fails unless the built .so carries sm_80 and sm_90 machine code (cuobjdump --list-elf)
#      and compute_90 PTX (cuobjdump --list-ptx);
#   4. imports it and checks reprogram_ext.backends() reports the CUDA kernels as compiled.
# With --existing, steps 2-4 check the extension already built in place by
# `.ci/setup_env.sh` (its log: build/build.log) instead of building a scratch copy.
# Run from the repository root. Environment: PYTHON (default python), CUDA_HOME (default: the
# toolkit root of /usr/local/cuda*), MAX_JOBS (default 2), TORCH_CUDA_ARCH_LIST (default setup.py's).
set -euo pipefail

PYTHON="${PYTHON:-python}"
REPO="$(pwd)"
[[ -f "$REPO/setup.py" && -d "$REPO/csrc/masked_perturb" ]] || { echo "check_cuda_build: run from the repository root" >&2; exit 2; }

if [[ -z "${CUDA_HOME:-}" ]]; then
  for root in /usr/local/cuda /usr/local/cuda-*; do
    if [[ -x "$root/bin/nvcc" ]]; then CUDA_HOME="$root"; break; fi
  done
fi
[[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]] || { echo "check_cuda_build: no nvcc; set CUDA_HOME to the toolkit root" >&2; exit 1; }
export CUDA_HOME

if [[ "${1:-}" == "--existing" ]]; then
  SCRATCH="$REPO"
  LOG="$REPO/build/build.log"
  [[ -f "$LOG" ]] && ls "$REPO"/reprogram_ext/_C*.so >/dev/null 2>&1 \
    || { echo "check_cuda_build: --existing needs an in-place build and its log $LOG" >&2; exit 1; }
  grep -q "nvcc" "$LOG" || { echo "check_cuda_build: FAILED: $LOG shows no nvcc compilation" >&2; exit 1; }
  echo "check_cuda_build: checking the existing build ($LOG)"
else
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/reprogram_ext_cuda_build.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
LOG="$SCRATCH/build.log"

# Scratch copy: the tracked and untracked-but-not-ignored files (no build/, no built .so).
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$SCRATCH"
else
  tar -C "$REPO" --exclude=./build --exclude='*.so' --exclude=./.venv -cf - . | tar -xf - -C "$SCRATCH"
fi

echo "check_cuda_build: building with CUDA ($CUDA_HOME) in $SCRATCH"
if ! (cd "$SCRATCH" && REPROGRAM_EXT_CUDA=1 REPROGRAM_EXT_PTXAS_VERBOSE=1 MAX_JOBS="${MAX_JOBS:-2}" \
      "$PYTHON" setup.py build_ext --inplace) >"$LOG" 2>&1; then
  tail -n 60 "$LOG" >&2
  echo "check_cuda_build: FAILED: the CUDA build did not compile / link" >&2
  exit 1
fi
fi

# ---- ptxas: every kernel, every arch, 0 bytes spilled.
kernels=$(grep -c "bytes spill stores" "$LOG" || true)
if [[ "$kernels" -eq 0 ]]; then
  echo "check_cuda_build: FAILED: no ptxas report in the build log (was -Xptxas -v passed?)" >&2
  exit 1
fi
if grep -qE "(^|[^0-9])[1-9][0-9]* bytes spill (stores|loads)" "$LOG"; then
  grep -B1 -E "(^|[^0-9])[1-9][0-9]* bytes spill (stores|loads)" "$LOG" >&2
  echo "check_cuda_build: FAILED: ptxas reports register spills (above)" >&2
  exit 1
fi
for arch in sm_80 sm_90; do
  grep -q "Compiling entry function .* for '$arch'" "$LOG" \
    || { echo "check_cuda_build: FAILED: ptxas compiled no kernel for $arch" >&2; exit 1; }
done
echo "check_cuda_build: ptxas: $kernels kernel compilations, 0 bytes spilled"
# Registers per kernel and arch (demangled when c++filt is there).
demangle() { if command -v c++filt >/dev/null; then c++filt; else cat; fi; }
awk '/Compiling entry function/ { match($0, /_Z[A-Za-z0-9_]+/); name = substr($0, RSTART, RLENGTH);
                                  match($0, /sm_[0-9]+/); arch = substr($0, RSTART, RLENGTH) }
     /Used [0-9]+ registers/   { match($0, /Used [0-9]+/); print arch, substr($0, RSTART + 5, RLENGTH - 5), name }' "$LOG" \
  | while read -r arch regs name; do
      printf '  %s %4s registers  %s\n' "$arch" "$regs" "$(demangle <<<"$name" | sed -E 's/>\(.*/>/; s/^void //; s/.*namespace\)::|c10:://g')"
    done | sort -k4 -k1

# ---- the .so carries sm_80 / sm_90 cubins and compute_90 PTX.
SO="$(ls "$SCRATCH"/reprogram_ext/_C*.so)"
CUOBJDUMP=""
for candidate in "$CUDA_HOME/bin/cuobjdump" "$(command -v cuobjdump || true)" \
    "$("$PYTHON" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)"; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then CUOBJDUMP="$candidate"; break; fi
done
[[ -n "$CUOBJDUMP" ]] || { echo "check_cuda_build: FAILED: no cuobjdump (CUDA toolkit or triton's bundled copy)" >&2; exit 1; }
elfs="$("$CUOBJDUMP" --list-elf "$SO")"
ptx="$("$CUOBJDUMP" --list-ptx "$SO")"
echo "$elfs" | sed 's/^/  /'
echo "$ptx" | sed 's/^/  /'
for arch in sm_80 sm_90; do
  grep -q "\.$arch\.cubin" <<<"$elfs" || { echo "check_cuda_build: FAILED: no $arch cubin in $SO" >&2; exit 1; }
done
grep -q "sm_90\.ptx\|compute_90" <<<"$ptx" || { echo "check_cuda_build: FAILED: no compute_90 PTX in $SO" >&2; exit 1; }
# The forward kernels' 16-byte stores survived optimisation (one per vector-store instantiation).
vector_stores=$("$CUOBJDUMP" --dump-ptx "$SO" | grep -c "st\.global\.wb\.v4\.u32" || true)
[[ "$vector_stores" -gt 0 ]] || { echo "check_cuda_build: FAILED: no 16-byte stores (st.global.wb.v4.u32) in the PTX" >&2; exit 1; }
echo "  PTX: $vector_stores 16-byte stores (st.global.wb.v4.u32)"

# ---- it imports on this (possibly GPU-less) machine and registers the CUDA kernels.
(cd "$SCRATCH" && PYTHONPATH="$SCRATCH" "$PYTHON" - <<'PY'
import os
import reprogram_ext

here = os.path.realpath(os.getcwd())
assert os.path.realpath(reprogram_ext.__file__).startswith(here), f"imported {reprogram_ext.__file__}, not the scratch build"
info = reprogram_ext.backends()
print("  backends():", info)
assert info["cpp"] and info["cuda_compiled"], "the CUDA build does not register CPU and CUDA kernels"
assert "8.0" in info["cuda_archs"] and "9.0" in info["cuda_archs"], info["cuda_archs"]
PY
)
echo "check_cuda_build: OK"
