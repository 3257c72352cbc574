#!/usr/bin/env bash
# Packaging check, CPU-only: sdist -> wheel -> install into a fresh directory -> import elsewhere.
#   1. copies the tracked and untracked-not-ignored files (their working-tree content) to a temporary source tree, so the
#      checkout's build outputs and reprogram_ext/_build_config.py are left alone;
#   2. builds an sdist there (setup.py sdist) and a wheel from that sdist with
#      `pip wheel --no-build-isolation --no-deps` and REPROGRAM_EXT_CUDA=0 (the sdist must hold every
#      file the build needs);
#   3. checks the wheel's metadata: Version = reprogram_ext.__version__, Requires-Dist torch==<the
#      torch of the build environment>;
#   4. installs the wheel with `pip install --no-deps --target` into an empty directory (the
#      environment's torch is reused: a fresh venv would download 5.5 GB) and, from an empty working
#      directory with only that directory on PYTHONPATH, imports it: reprogram_ext.__file__ lies in
#      the install, the compiled C++ ops load and agree with the reference backend.
# Usage: bash .ci/check_wheel.sh   (PYTHON = the python with torch; default .venv/bin/python)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/src" "$TMP/dist" "$TMP/wheel" "$TMP/site" "$TMP/clean"

# tracked and untracked-but-not-ignored files that exist in the working tree
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
   [ -e "$f" ] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$TMP/src")

echo "[wheel] sdist"
(cd "$TMP/src" && REPROGRAM_EXT_CUDA=0 "$PY" setup.py -q sdist -d "$TMP/dist" > "$TMP/sdist.log" 2>&1) \
  || { tail -n 40 "$TMP/sdist.log"; echo "[wheel] sdist failed" >&2; exit 1; }
sdist=$(ls "$TMP"/dist/*.tar.gz)
echo "[wheel] wheel from $(basename "$sdist") (CPU-only build)"
(cd "$TMP" && REPROGRAM_EXT_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel -q --no-build-isolation --no-deps \
  -w "$TMP/wheel" "$sdist" > "$TMP/wheel.log" 2>&1) \
  || { grep -m 20 -E "error|No such file" "$TMP/wheel.log"; tail -n 20 "$TMP/wheel.log"
       echo "[wheel] wheel build failed" >&2; exit 1; }
whl=$(ls "$TMP"/wheel/*.whl)
echo "[wheel] built $(basename "$whl")"

"$PY" - "$whl" "$ROOT/reprogram_ext/__init__.py" <<'PYEOF'
import ast, sys, zipfile
import torch
whl, init = sys.argv[1], sys.argv[2]
version = next(n.value.value for n in ast.parse(open(init).read()).body
               if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__version__")
with zipfile.ZipFile(whl) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    names = z.namelist()
fields = [line.split(": ", 1) for line in meta.splitlines() if ": " in line]
got_version = [v for k, v in fields if k == "Version"]
requires = [v for k, v in fields if k == "Requires-Dist"]
want_torch = f"torch=={torch.__version__.split('+')[0]}"
assert got_version == [version], f"wheel Version {got_version} != reprogram_ext.__version__ {version!r}"
assert want_torch in requires, f"wheel requires {requires}, expected {want_torch}"
assert any(n.startswith("reprogram_ext/_C") and n.endswith(".so") for n in names), "no compiled library in the wheel"
print(f"[wheel] metadata: Version {version}, Requires-Dist {requires}")
PYEOF

"$PY" -m pip install -q --no-deps --no-index --target "$TMP/site" "$whl"
(cd "$TMP/clean" && PYTHONPATH="$TMP/site" "$PY" - "$TMP/site" <<'PYEOF'
import os, sys
import torch
import reprogram_ext
site = os.path.realpath(sys.argv[1])
assert os.path.realpath(reprogram_ext.__file__).startswith(site + os.sep), reprogram_ext.__file__
info = reprogram_ext.backends()
assert reprogram_ext._extension.LOAD_ERROR is None, reprogram_ext._extension.LOAD_ERROR
x, delta = torch.rand(2, 3, 4, 4), torch.randn(3, 8, 8)
mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)
out = reprogram_ext.masked_perturb(x, delta, activation="sigmoid", mean=mean, std=std, backend="cpu")
ref = reprogram_ext.masked_perturb(x, delta, activation="sigmoid", mean=mean, std=std, backend="reference")
torch.testing.assert_close(out, ref)
logits = torch.randn(5, 10)
index = torch.tensor([[0, 1], [2, -1]])
torch.testing.assert_close(reprogram_ext.label_map(logits, index, backend="cpu"),
                           reprogram_ext.label_map(logits, index, backend="reference"))
print(f"[wheel] installed {reprogram_ext.__version__} imports from {os.path.dirname(reprogram_ext.__file__)}; "
      f"C++ ops load and match the reference; backends: {info}")
PYEOF
)
echo "[wheel] ok"
