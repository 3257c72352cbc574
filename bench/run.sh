#!/usr/bin/env bash
# The main job: sets up the environment on a fresh machine (.ci/setup_env.sh), runs every benchmark
# at default sizes (python -m bench: table, bench/results/results.{txt,json,csv,png}), then the
# demos (python -m reprogram_ext.demo, .demo.blackbox, .demo.tokens: bench/results/demo*/). Arguments go to the
# benchmark, e.g. `bash bench/run.sh --quick` (about two minutes) or `--ops masked_perturb`;
# with --quick the demo runs its quick mode too.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/.ci/setup_env.sh"
cd "$ROOT"
echo "[main] benchmarks: python -m bench $*"
"$PY" -m bench "$@"
demo_args=(--output "$ROOT/bench/results/demo")
for a in "$@"; do [ "$a" = "--quick" ] && demo_args+=(--quick); done
echo "[main] demo: python -m reprogram_ext.demo ${demo_args[*]}"
MPLBACKEND=Agg "$PY" -m reprogram_ext.demo "${demo_args[@]}"
for demo in blackbox tokens; do
  echo "[main] demo: python -m reprogram_ext.demo.$demo ${demo_args[*]/%demo/demo_$demo}"
  MPLBACKEND=Agg "$PY" -m "reprogram_ext.demo.$demo" "${demo_args[@]/%demo/demo_$demo}"
done
