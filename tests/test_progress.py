"""The demo's progress bar: one summary line when the stream is not a terminal, a tqdm bar when it is."""
import io

from reprogram_ext.demo.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_one_summary_line():
    log = io.StringIO()
    bar = ProgressBar(50, "train 1/2", stream=log)
    for i in range(50):
        bar.update(loss=1.0 / (i + 1))
    assert log.getvalue() == ""  # nothing per step
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train 1/2") and "[50/50 steps]" in lines[0]
    assert lines[0].endswith("loss=0.020")


def test_terminal_gets_a_tqdm_bar():
    term = Terminal()
    bar = ProgressBar(4, "source", stream=term)
    for _ in range(4):
        bar.update(loss=0.5)
    bar.close()
    out = term.getvalue()
    assert "source" in out and "4/4" in out and "loss=0.500" in out and "\r" in out
