"""What a user would pick instead of imgdist, doing the same file-to-file job, for the benchmark.

Each peer is started once (warm) and then runs the job on a list of (source, output) pairs.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import socket
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from imgdist.engine import process_file
from imgdist.names import name_of
from imgdist.tuning import tune_for_images

CEILING = "split"  # not a peer: the machine's own limit for that many processes
Pairs = Sequence[tuple[str, str]]


def process_files(pairs: Pairs, label: str) -> int:
    """Run the whole job on each (source, output) pair in this process; how many were done."""
    for source, output in pairs:
        process_file(source, output, label)
    return len(pairs)


def _chunksize(n_items: int, n_processes: int) -> int:
    # multiprocessing.Pool.map's own default: about four chunks per process
    return max(1, math.ceil(n_items / (4 * n_processes)))


class LocalPeer:
    """The baseline: the whole job, sequentially, in one clean process without ipyparallel.

    Not in the benchmark's own process: the ipyparallel client's and dask's threads there
    slow plain Python work by ~25% (measured: 77 ms in a clean process, 98-110 ms beside them).
    """

    name = "local"

    def __init__(self, n_processes: int = 1) -> None:
        self.label = name_of("local", socket.gethostname())
        self.pool = multiprocessing.get_context("spawn").Pool(1, initializer=tune_for_images)

    def run(self, pairs: Pairs) -> None:
        self.pool.apply(process_files, (list(pairs), self.label))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class PoolPeer:
    """`multiprocessing.Pool(n).map`, chunked as Pool chunks by default."""

    name = "multiprocessing"

    def __init__(self, n_processes: int) -> None:
        self.n = n_processes
        self.label = name_of("multiprocessing", socket.gethostname())
        context = multiprocessing.get_context("spawn")  # fork is unsafe beside zmq's threads
        self.pool = context.Pool(n_processes, initializer=tune_for_images)

    def run(self, pairs: Pairs) -> None:
        self.pool.starmap(
            process_file, [(s, o, self.label) for s, o in pairs], _chunksize(len(pairs), self.n)
        )

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class SplitCeiling:
    """The job cut into one equal part per process, each done by one warm process at once.

    No scheduling and one message per process: no way of sharing the work among that many
    processes can be faster, so this is the machine's ceiling for it, not a peer.
    """

    name = CEILING

    def __init__(self, n_processes: int) -> None:
        self.n = n_processes
        self.label = name_of(f"{CEILING}{n_processes}", socket.gethostname())
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(n_processes, initializer=tune_for_images)

    def run(self, pairs: Pairs) -> None:
        parts = [list(pairs[i :: self.n]) for i in range(self.n)]
        self.pool.starmap(process_files, [(part, self.label) for part in parts], 1)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class ProcessPoolPeer:
    """`concurrent.futures.ProcessPoolExecutor(n).map`, with the same chunking."""

    name = "process-pool"

    def __init__(self, n_processes: int) -> None:
        self.n = n_processes
        self.label = name_of("process-pool", socket.gethostname())
        self.executor = ProcessPoolExecutor(
            n_processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=tune_for_images,
        )

    def run(self, pairs: Pairs) -> None:
        sources, outputs = zip(*pairs, strict=True)
        list(
            self.executor.map(
                process_file,
                sources,
                outputs,
                [self.label] * len(pairs),
                chunksize=_chunksize(len(pairs), self.n),
            )
        )

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class DaskPeer:
    """dask.distributed `LocalCluster`, one single-threaded worker process per core, `client.map`."""

    name = "dask"

    def __init__(self, n_processes: int) -> None:
        from dask.distributed import Client, LocalCluster

        self.label = name_of("dask", socket.gethostname())
        self.cluster = LocalCluster(
            n_workers=n_processes,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        )
        self.client = Client(self.cluster)
        self.client.run(tune_for_images)

    def run(self, pairs: Pairs) -> None:
        sources, outputs = zip(*pairs, strict=True)
        futures = self.client.map(process_file, sources, outputs, label=self.label, pure=False)
        self.client.gather(futures)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.cluster.close()


# what a user would pick instead of imgdist, by the benchmark's case names
PEER_KINDS = {"multiprocessing": PoolPeer, "process-pool": ProcessPoolPeer, "dask": DaskPeer}
PEERS = tuple(PEER_KINDS)
_KINDS = {"local": LocalPeer, **PEER_KINDS, CEILING: SplitCeiling}


def start_peer(name: str, n_processes: int | None = None):
    """Start the peer called `name` with `n_processes` (default: as many as cores)."""
    return _KINDS[name](n_processes or os.cpu_count() or 1)
