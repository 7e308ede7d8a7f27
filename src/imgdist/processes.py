"""Processes this machine started for a cluster, followed to their end: a process with its
descendants (an engine's nanny, mpiexec's engines, the controller's schedulers), waited for by
polling (their parents reap them) and killed when they outstay a grace period."""

from __future__ import annotations

import contextlib
import time

import psutil

POLL_S = 0.05


def with_descendants(process: psutil.Process | int) -> list[psutil.Process]:
    """`process` (or the process of that pid) and every process below it (none when it has
    ended)."""
    with contextlib.suppress(psutil.Error):
        process = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return [process, *process.children(recursive=True)]
    return []


def running(process: psutil.Process) -> bool:
    """Whether `process` still runs (an ended child that nobody reaped yet does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for `processes` to end; those still running."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in processes if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [p for p in left if running(p)]
    return left


def end(processes: list[psutil.Process], *, grace_s: float, timeout_s: float) -> None:
    """Kill (SIGKILL) those of `processes` still running after `grace_s`, and wait up to
    `timeout_s` for them to go."""
    for process in wait_gone(processes, grace_s):
        with contextlib.suppress(psutil.Error):
            process.kill()
    wait_gone(processes, timeout_s)
