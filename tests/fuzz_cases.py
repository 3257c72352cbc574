"""Helpers of the fuzz and regression suites (tests/test_fuzz*.py): running a crash-prone case in a
fresh Python process, so that a segfault or an abort fails one test instead of killing the run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_isolated(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a new interpreter with this checkout first on the path and the
    environment variables ``env`` added (a value None removes the variable)."""
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), child_env.get("PYTHONPATH", "")])
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_ran(result: subprocess.CompletedProcess) -> None:
    """The child exited normally (a negative return code is a signal: a crash)."""
    assert result.returncode == 0, (f"child exited with {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
                                    f"\n--- stderr\n{result.stderr[-3000:]}")
