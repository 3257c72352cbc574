#!/usr/bin/env bash
# The test command: sets up the environment on a fresh machine (.ci/setup_env.sh), then runs the
# whole suite twice: the normal process (reference, C++ CPU, CUDA when a GPU is present, Triton
# ahead-of-time compilation), and the Triton kernels on CPU tensors under TRITON_INTERPRET=1 in
# their own process. Extra arguments go to both pytest runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/.ci/setup_env.sh"
cd "$ROOT"
echo "[test] pytest: reference / cpu / cuda backends, AOT"
"$PY" -m pytest -q -p no:cacheprovider "$@"
echo "[test] pytest: Triton kernels under the Triton interpreter"
TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider -m triton_interpreter "$@"
