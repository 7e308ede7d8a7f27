"""Stopping what was started here: engines asked to shut down, the controller, batch jobs
cancelled and waited out of the queue, remote folders removed, the launchers' output kept."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import ipyparallel as ipp
import psutil

from imgdist.cluster.remote import remove_remote_dirs
from imgdist.launchers import slurm_job
from imgdist.processes import end, wait_gone, with_descendants

STOP_TIMEOUT_S = 5.0
LAUNCH_POLL_S = 0.25
# an engine's nanny tells the controller that its engine ended, then exits: at once while the
# controller runs, 3 s later when it is gone (its message's linger), and now and then never
NANNY_EXIT_S = 2.0
LEFT_OVER_S = 1.0  # what is left of the cluster after the controller stopped, before SIGKILL


class Stopping:
    """The part of `Cluster` that stops what it started (a mixin)."""

    @property
    def log_file(self) -> Path | None:
        """The file that keeps what the controller and engines started here wrote."""
        if self._local is None:
            return None
        return (
            Path(self._local.profile_dir) / "log" / f"imgdist-cluster-{self._local.cluster_id}.log"
        )

    def stop(self) -> str:
        """Close the client, and stop the cluster if this object started it; one line saying what
        happened.

        Engines are asked to shut down first, so they exit cleanly instead of dying on a signal
        (ipyparallel's engines print a traceback when terminated); stragglers are then stopped.
        """
        self._stopped = True
        if self._local is None:
            with contextlib.suppress(Exception):
                self._client.close()
            return f"Disconnected from {self.source}; that cluster keeps running."
        engines = len(self._client.ids)
        # taken before the engines end: an engine's nanny is its child until then
        engine_side = _engine_processes(self._local)
        with contextlib.suppress(Exception):
            self._shut_down_engines()
        wait_gone(engine_side, NANNY_EXIT_S)  # the nannies exit while the controller hears them
        with contextlib.suppress(Exception):
            self._client.close()
        log_file = self.log_file
        with contextlib.suppress(Exception):
            self._keep_output()
        forget_unsubmitted(self._local)
        jobs = [
            str(engine_set.job_id)
            for engine_set in self._local.engines.values()
            if getattr(engine_set, "job_id", "")
        ]
        with contextlib.suppress(Exception):
            self._local.stop_cluster_sync()
        # nothing started here outlives the stop: a nanny telling the stopped controller, or
        # stuck for good, is killed
        end(engine_side + self._controller_tree, grace_s=LEFT_OVER_S, timeout_s=STOP_TIMEOUT_S)
        if self._launcher.name == "slurm":
            _wait_until_dequeued(jobs)
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        remove_remote_dirs(self._remote_dirs)
        self._remote_dirs = []
        for handler in self._local.log.handlers:
            handler.close()
        self._local = None
        noun = "engine" if engines == 1 else "engines"
        return f"Stopped the local cluster (controller and {engines} {noun}); its log: {log_file}"

    def _note_started(self) -> None:
        """Note the controller's processes as started (its schedulers are its children, started
        with it), so that stop ends them even if the controller itself died first."""
        self._controller_tree = _tree([self._local.controller] if self._local.controller else [])

    def _keep_output(self) -> None:
        """Copy what the controller and engines wrote into the cluster's log file: ipyparallel
        removes their output files when it stops them."""
        launchers = [self._local.controller] if self._local.controller else []
        for engine_set in self._local.engines.values():
            launchers.extend(getattr(engine_set, "launchers", {}).values())
        for launcher in launchers:
            path = Path(getattr(launcher, "output_file", "") or "")
            if path.is_file() and path.stat().st_size:
                text = path.read_text(errors="replace")
                self._local.log.info("Output of %s:\n%s", path.stem, text.rstrip())

    def _shut_down_engines(self) -> None:
        ids = list(self._client.ids)
        if not ids:
            return
        self._client.shutdown(targets=ids, hub=False, block=False)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._client.ids and time.monotonic() < deadline:
            time.sleep(0.05)


def _wait_until_dequeued(jobs: list[str], timeout_s: float = 30.0) -> None:
    """Wait until cancelled Slurm jobs have left the queue (they stay COMPLETING for a moment),
    so nothing of a run is queued once it ends."""
    deadline = time.monotonic() + timeout_s
    while jobs and time.monotonic() < deadline:
        jobs = [job for job in jobs if slurm_job(job, timeout_s=5)[0]]
        if jobs:
            time.sleep(LAUNCH_POLL_S)


def forget_unsubmitted(local: ipp.Cluster) -> None:
    """Drop engine sets whose job was never submitted: stopping them would run `scancel ''`."""
    for set_id, engine_set in list(local.engines.items()):
        if hasattr(engine_set, "job_id") and not engine_set.job_id:
            local.engines.pop(set_id)


def _engine_processes(local: ipp.Cluster) -> list[psutil.Process]:
    """The processes on this machine that `local`'s engine launchers started, with their
    descendants (engines' nannies, mpiexec's engines). Batch jobs have none here (the batch
    system ends them)."""
    engine_launchers = []
    for engine_set in local.engines.values():
        engine_launchers.append(engine_set)
        engine_launchers.extend(getattr(engine_set, "launchers", {}).values())
    return _tree(engine_launchers)


def _tree(launchers: list) -> list[psutil.Process]:
    found = []
    for launcher in launchers:
        process = getattr(launcher, "process", None)
        if isinstance(process, psutil.Process):
            found.extend(with_descendants(process))
    return found
