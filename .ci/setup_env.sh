#!/usr/bin/env bash
# Creates the project's virtual environment (.venv, or $REPROGRAM_EXT_VENV) with everything it
# needs, and builds the extension into it with `pip install --no-build-isolation -e .`.
# Idempotent: packages already present are kept, and the build is skipped while the compiled
# library is newer than every source file. Source it or run it; it exports PY (the venv python).
#
# CUDA kernels are built when nvcc is found (REPROGRAM_EXT_CUDA=0 skips them, =1 requires them);
# a GPU is never needed for the build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${REPROGRAM_EXT_VENV:-$ROOT/.venv}
BASE_PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$BASE_PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PY

if ! "$PY" -c "import torch, triton, pytest, hypothesis, matplotlib, sklearn, torchvision, ninja, timm, transformers, tqdm" 2>/dev/null; then
  echo "[setup] installing packages (torch 2.14.1 is ~5.5 GB; a few minutes)"
  "$PY" -m pip install -q -r "$ROOT/.ci/requirements.txt"
fi

so=$(ls "$ROOT"/reprogram_ext/_C*.so 2>/dev/null | head -n 1 || true)
newer=""
if [ -n "$so" ]; then
  newer=$(find "$ROOT/csrc" "$ROOT/setup.py" -newer "$so" -type f | head -n 1)
fi
if [ -z "$so" ] || [ -n "$newer" ] || [ -n "${REPROGRAM_EXT_REBUILD:-}" ]; then
  echo "[setup] building the extension (log: $ROOT/build/build.log)"
  mkdir -p "$ROOT/build"
  export MAX_JOBS=${MAX_JOBS:-2}
  if [ "${REPROGRAM_EXT_CUDA:-}" != "0" ]; then export REPROGRAM_EXT_PTXAS_VERBOSE=1; fi
  if ! (cd "$ROOT" && "$PY" -m pip install -v --no-build-isolation --no-deps -e . > "$ROOT/build/build.log" 2>&1); then
    tail -n 60 "$ROOT/build/build.log"
    echo "[setup] build failed (full log: $ROOT/build/build.log)" >&2
    exit 1
  fi
fi
"$PY" -c "import reprogram_ext, json; print('[setup] backends:', json.dumps(reprogram_ext.backends()))"
