"""The black-box demo (quick mode) trains through probabilities only, beats chance widely and counts its queries."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_black_box_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "reprogram_ext.demo.blackbox", "--quick", "--output", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "training queries" in proc.stdout and "steps] " in proc.stdout  # report and one line per epoch in a log
    r = json.loads((tmp_path / "blackbox_results.json").read_text())
    assert r["chance"] == 0.2
    assert r["black_box"] > r["chance"] + 0.3 and r["black_box"] > r["mapping_only"] + 0.1
    assert r["white_box"] > r["chance"] + 0.3
    # every training sample is queried (q + 1) times per epoch; the mapping's fit and the test add to the total
    assert r["training_queries"] == r["epochs"] * (r["q"] + 1) * r["train_samples"]
    assert r["total_queries"] > r["training_queries"]
    with open(tmp_path / "blackbox_prompt.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
