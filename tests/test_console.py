"""The command line's progress: a tqdm bar on a terminal, a line per tenth of the run otherwise."""

from __future__ import annotations

import io

from imgdist.console import TerminalProgress
from imgdist.results import Progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as a console's stderr does."""

    def isatty(self) -> bool:
        return True


def feed(progress: TerminalProgress, total: int, failed_at: int | None = None) -> None:
    failed = 0
    for done in range(1, total + 1):
        failed += done == failed_at
        progress(Progress(done, total, failed, {"w@h": done - failed}))
    progress.close()


def test_plain_lines_every_tenth_of_the_run():
    """Not a terminal: a line every tenth of the run, the last one always; no bar."""
    stream = io.StringIO()
    feed(TerminalProgress(1000, stream=stream), 1000, failed_at=500)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "100/1000 images done (0 failed)"
    assert lines[-1] == "1000/1000 images done (1 failed)"


def test_last_line_when_the_run_ends_between_lines():
    """A run that stops between two lines still says where it ended."""
    stream = io.StringIO()
    progress = TerminalProgress(100, stream=stream)
    for done in range(1, 36):
        progress(Progress(done, 100, 0, {}))
    progress.close()
    assert stream.getvalue().splitlines()[-1] == "35/100 images done (0 failed)"


def test_unknown_total_writes_a_line_every_100_images():
    """Streamed inputs of unknown count: a line every 100 images."""
    stream = io.StringIO()
    progress = TerminalProgress(None, stream=stream)
    for done in range(1, 251):
        progress(Progress(done, None, 0, {}))
    progress.close()
    assert stream.getvalue().splitlines() == [
        "100 images done (0 failed)",
        "200 images done (0 failed)",
        "250 images done (0 failed)",
    ]


def test_a_terminal_gets_a_tqdm_bar():
    """On a terminal, tqdm draws a bar that ends at the total, with the failures shown."""
    stream = Terminal()
    feed(TerminalProgress(40, stream=stream), 40, failed_at=7)
    text = stream.getvalue()
    assert "\r" in text  # redrawn in place
    assert "40/40" in text
    assert "failed=1" in text
    assert "images done" not in text
