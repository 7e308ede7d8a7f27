"""A run's progress on the command line: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

from imgdist.results import Progress

LINES_PER_RUN = 10  # when not on a terminal: a line every tenth of the run
LINE_EVERY_UNKNOWN = 100  # ... or every 100 images when the total is not known


class TerminalProgress:
    """Call it with each `Progress` (pass it as `on_progress`); `close()` when the run ends.

    On a terminal it draws a tqdm bar; in a log or a pipe it writes a line every
    `every` images (a tenth of the run by default) and one at the end.
    """

    def __init__(
        self, total: int | None, *, stream: TextIO | None = None, every: int | None = None
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every = every or (max(1, -(-total // LINES_PER_RUN)) if total else LINE_EVERY_UNKNOWN)
        self.done = 0
        self.failed = 0
        self.next_line = self.every
        self.last_line = 0
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=self.stream, dynamic_ncols=True)

    def __call__(self, progress: Progress) -> None:
        if progress.done <= self.done:
            return
        if self.bar is not None:
            self.bar.update(progress.done - self.done)
            if progress.failed != self.failed:
                self.bar.set_postfix(failed=progress.failed)
        elif progress.done >= self.next_line:
            self._line(progress.done, progress.failed)
            self.next_line = (progress.done // self.every + 1) * self.every
        self.done, self.failed = progress.done, progress.failed

    def close(self) -> None:
        """End the bar, or write the last line if the run ended between lines."""
        if self.bar is not None:
            self.bar.close()
        elif self.done != self.last_line:
            self._line(self.done, self.failed)

    def _line(self, done: int, failed: int) -> None:
        self.last_line = done
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{done}{of} images done ({failed} failed)", file=self.stream, flush=True)
