"""The end-to-end demo (quick mode) runs from the repository root and beats chance clearly."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "demo", "--quick", "--output", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "linear probe" in proc.stdout and "] " in proc.stdout  # report and progress bar printed
    results = json.loads((tmp_path / "results.json").read_text())
    chance = results["chance"]
    assert chance == 0.2 and results["source_accuracy"] > 0.6
    for run in results["runs"].values():
        assert run["reprogrammed"] > chance + 0.3
        assert run["reprogrammed"] > run["mapping_only"]
        assert sorted(run["index"]) == list(range(5))  # one-to-one mapping of the 5 digits
    assert results["linear_probe"] > chance + 0.3
    for name in ("prompt.png", "label_mapping.png"):
        with open(tmp_path / name, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert any(p.suffix == ".pt" for p in tmp_path.iterdir())  # the source weights were cached
