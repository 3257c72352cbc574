#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (its own torch, no network), from the repository root:
#
#     bash bench/gpu.sh [RESULTS_DIR]          # default bench/results/gpu-<date>; about 10 minutes at most
#
# 1. machine.txt: nvidia-smi, python / torch / triton / nvcc versions;
# 2. builds the extension in place with REPROGRAM_EXT_CUDA=1 against this machine's torch, machine
#    code for this GPU's arch only (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability());
#    log: build.log;
# 3. python -m pytest -q tests: with a GPU present the tests run on the reference, cpu, cuda and
#    triton backends (log: pytest.log; junit: pytest.xml);
# 4. copy_roofline.txt: the achievable copy bandwidth (torch copy_ of 1 GiB float32, CUDA events),
#    the number each kernel's bandwidth is judged against (python -m bench measures no copy);
# 5. python -m bench --device cuda: first the masked_perturb cases, then the other ops, each run
#    writing results.{txt,json,csv,png} under RESULTS_DIR/bench-<ops>/ (a run cut short by the
#    time limit writes nothing, so the headline op goes first).
# Every step has its own time limit (seconds, environment): BUILD_S=240 TEST_S=150 ROOFLINE_S=30,
# the benchmarks get what is left of TOTAL_S=570. A failing step is recorded in summary.txt and
# the next step still runs; the exit code is 1 when any step failed. PYTHON (default python3)
# selects the interpreter; MAX_JOBS (default: all cores) the parallel compilations.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT=${1:-$ROOT/bench/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TOTAL_S=${TOTAL_S:-570}
BUILD_S=${BUILD_S:-240}
TEST_S=${TEST_S:-150}
ROOFLINE_S=${ROOFLINE_S:-30}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
failed=0
note() { echo "[gpu $SECONDS s] $*" | tee -a "$SUMMARY"; }
# step NAME LIMIT_S CMD...: runs CMD under `timeout`, records its exit code and duration.
step() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  if (( limit < 10 )); then note "$name: SKIPPED (only ${limit}s left of TOTAL_S=$TOTAL_S)"; failed=1; return; fi
  note "$name: start (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  if (( rc == 0 )); then note "$name: ok ($((SECONDS - t0))s)"
  elif (( rc == 124 || rc == 137 )); then note "$name: TIMED OUT after ${limit}s"; failed=1
  else note "$name: FAILED rc=$rc ($((SECONDS - t0))s)"; failed=1
  fi
}
left() { echo $(( TOTAL_S - SECONDS )); }

# ---- 1. the machine
{
  date -u
  nvidia-smi || echo "nvidia-smi: not found"
  "$PY" - <<'PY'
import sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA runtime", torch.version.cuda)
print("GPU present:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device:", p.name, f"sm_{p.major}{p.minor}", f"{p.multi_processor_count} SMs", f"{p.total_memory / 2**30:.0f} GiB")
try:
    import triton
    print("triton", triton.__version__)
except ImportError as e:
    print("triton: not importable:", e)
for name in ("pytest", "hypothesis", "ninja", "matplotlib", "torchvision", "sklearn"):
    try:
        __import__(name)
    except ImportError:
        print(f"missing package: {name} (tests or benchmarks that need it will fail; no network to install it)")
PY
  command -v nvcc && nvcc --version | tail -n 2
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
ARCH=$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(0); print(f'{m}.{n}')" 2>/dev/null) || {
  note "no CUDA device visible to torch: this script needs a GPU"; exit 1; }

# ---- 2. build in place against this torch, for this GPU only
export REPROGRAM_EXT_CUDA=1 REPROGRAM_EXT_PTXAS_VERBOSE=1 TORCH_CUDA_ARCH_LIST="$ARCH"
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
step "build (sm ${ARCH}, MAX_JOBS=$MAX_JOBS)" "$BUILD_S" \
  bash -c "'$PY' setup.py build_ext --inplace > '$OUT/build.log' 2>&1"
grep -E "registers|spill" "$OUT/build.log" > "$OUT/ptxas.txt" 2>/dev/null || true
"$PY" -c "import reprogram_ext, json; print(json.dumps(reprogram_ext.backends()))" > "$OUT/backends.json" 2>&1
note "backends: $(cat "$OUT/backends.json")"

# ---- 3. the tests, on every backend present
step "pytest tests" "$(( TEST_S < $(left) ? TEST_S : $(left) ))" \
  bash -c "PYTHONPATH='$ROOT' '$PY' -m pytest -q -p no:cacheprovider --junitxml='$OUT/pytest.xml' tests > '$OUT/pytest.log' 2>&1"
tail -n 3 "$OUT/pytest.log" | tee -a "$SUMMARY"

# ---- 4. the copy roofline of this GPU, measured the way the benchmarks time (CUDA events)
step "copy roofline" "$(( ROOFLINE_S < $(left) ? ROOFLINE_S : $(left) ))" \
  bash -c "'$PY' - > '$OUT/copy_roofline.txt' 2>&1" <<'PY'
import torch
n = 2**28  # 1 GiB of float32 read + 1 GiB written per copy
src = torch.rand(n, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(20):
    start.record()
    dst.copy_(src)
    end.record()
    end.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
best = min(times)
print(f"{torch.cuda.get_device_name(0)}: copy of {n * 4 / 2**30:.0f} GiB float32: best {best * 1e3:.3f} ms, "
      f"{2 * n * 4 / best / 1e12:.2f} TB/s (read + write), median {sorted(times)[len(times) // 2] * 1e3:.3f} ms")
PY
cat "$OUT/copy_roofline.txt" | tee -a "$SUMMARY"

# ---- 5. the benchmarks on CUDA: the headline op first, then the rest with the time left
step "python -m bench --device cuda --ops masked_perturb" "$(( $(left) * 6 / 10 ))" \
  bash -c "PYTHONPATH='$ROOT' '$PY' -m bench --device cuda --ops masked_perturb --out '$OUT/bench-masked_perturb' > '$OUT/bench-masked_perturb.log' 2>&1"
step "python -m bench --device cuda --ops label_map,mapped_cross_entropy,e2e_step,tokens_to_canvas,vocab_map,blackbox_step" "$(left)" \
  bash -c "PYTHONPATH='$ROOT' '$PY' -m bench --device cuda --ops label_map,mapped_cross_entropy,e2e_step,tokens_to_canvas,vocab_map,blackbox_step --out '$OUT/bench-other' > '$OUT/bench-other.log' 2>&1"

note "done: results in $OUT ($( ((failed)) && echo 'some steps FAILED' || echo 'all steps ok'))"
exit "$failed"
