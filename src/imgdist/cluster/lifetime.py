"""Stopping what was started here: engines asked to shut down, the controller, batch jobs
cancelled and waited out of the queue, remote folders removed, the launchers' output kept."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import ipyparallel as ipp

from imgdist.cluster.remote import remove_remote_dirs
from imgdist.launchers import slurm_job

STOP_TIMEOUT_S = 5.0
LAUNCH_POLL_S = 0.25


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
        with contextlib.suppress(Exception):
            self._shut_down_engines()
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
