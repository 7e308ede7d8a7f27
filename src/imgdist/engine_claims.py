"""Engine side of the shared-disk schedule: chunks claimed by creating a file exclusively,
progress published to the main as it happens."""

from __future__ import annotations

import os
import time
from pathlib import Path

from imgdist.codec import DEFAULT_MAX_PIXELS
from imgdist.engine import process_file, worker_name
from imgdist.tuning import tune_for_images


def process_claimed(
    chunks: list[list[tuple[int, str, str]]],
    claims_dir: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list:
    """Process the chunks of images this engine claims, on a file system shared with the main.

    Every engine gets the same chunks and claims chunk k by creating the file `claims_dir/k`
    exclusively (`O_CREAT | O_EXCL`, atomic on NFS, SMB and sshfs, where `flock` may not be
    shared between machines), so each chunk is processed by one engine and a slow engine simply
    claims fewer. Claims and finished images are published to the main as they happen (at most
    every `REPORT_EVERY_S`), so it sees progress, checkpoints the manifest and notices a stuck
    engine. Returns `[worker, done, errors, times]` for everything this engine processed.
    """
    tune_for_images()
    report = _Reporter(worker_name())
    for chunk_number, chunk in enumerate(chunks):
        if not claim(claims_dir, chunk_number, report.worker):
            continue
        report.claimed(chunk_number)
        for index, source, output in chunk:
            started = time.time()
            try:
                process_file(source, output, report.worker, max_pixels=max_pixels)
            except OSError:
                report.publish(force=True)  # what is done is done; the rest goes elsewhere
                raise  # the disk or the network, not this image: the main gives this worker up
            except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the batch
                report.failed(index, str(exc) or type(exc).__name__)
                continue
            report.finished(index, started, time.time())
    report.publish(force=True)
    return [report.worker, report.done, report.errors, report.times]


REPORT_EVERY_S = 0.2


class _Reporter:
    """What an engine has done in `process_claimed`, published to the main bit by bit."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.done: list[int] = []
        self.errors: dict[int, str] = {}
        self.times: list[tuple[float, float]] = []
        self.claims: list[int] = []
        self.sent = 0  # how many of `done`, `errors` and `claims` were published
        self.sent_errors = 0
        self.sent_claims = 0
        self.last = time.monotonic()
        self.number = 0

    def claimed(self, chunk_number: int) -> None:
        self.claims.append(chunk_number)
        self.publish()

    def finished(self, index: int, started: float, ended: float) -> None:
        self.done.append(index)
        self.times.append((started, ended))
        self.publish()

    def failed(self, index: int, reason: str) -> None:
        self.errors[index] = reason
        self.publish()

    def publish(self, *, force: bool = False) -> None:
        """Send what is new since the last report, if `REPORT_EVERY_S` has passed (or `force`)."""
        if not force and time.monotonic() - self.last < REPORT_EVERY_S:
            return
        errors = list(self.errors.items())
        news = {
            "claims": self.claims[self.sent_claims :],
            "done": list(zip(self.done[self.sent :], self.times[self.sent :], strict=True)),
            "errors": errors[self.sent_errors :],
        }
        if not any(news.values()):
            return
        self.number += 1
        _publish({f"report-{self.number}": (self.worker, news)})
        self.sent, self.sent_errors, self.sent_claims = (
            len(self.done),
            len(errors),
            len(self.claims),
        )
        self.last = time.monotonic()


def _publish(data: dict) -> None:
    # ipyparallel's data channel: messages go to the main while the task runs (keys add up in
    # the task's result metadata there); outside an engine (tests calling directly) nothing is sent
    try:
        from ipyparallel.datapub import publish_data

        publish_data(data)
    except (ImportError, AttributeError):
        pass


def claim(claims_dir: str, chunk_number: int, worker: str) -> bool:
    """Take chunk `chunk_number` by creating `claims_dir/<chunk_number>` exclusively; False if
    another engine has it."""
    path = Path(claims_dir, str(chunk_number))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except PermissionError:
        # sshfs answers some lost O_EXCL races with EPERM instead of EEXIST
        if path.is_symlink() or path.exists():
            return False
        raise
    with os.fdopen(fd, "w") as handle:
        handle.write(worker)
    return True
