"""The floor of the main's cost per image without a shared disk: what any route must do on the
main, and nothing else. Read each input's bytes, send them to a worker, take the output's
bytes back and write them as a file (atomically, as every route does). The workers run
`direct`'s own engine side (`process_direct`), so they do the same work and the main shares
the machine with them as it does then; the main keeps no books: no output plan, manifest,
retries, timeline or measures.

`imgdist bench --main-cost` and `make bench-netns` count it like a transport (`FLOOR`): the
main side of `direct` against it says how much of the main's cost is the route's own work.
It goes over the data route's sockets and handshake (`imgdist.dataroute`), one chunk of
`CHUNK` images at a time, two chunks asked for at once per worker, like `direct`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from imgdist.codec import read_file
from imgdist.files import atomic_write

FLOOR = "floor"
CHUNK = 16  # direct's largest chunk
TIMEOUT_S = 120.0


def floor_run(
    cluster,
    workers: Sequence,
    sources: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
) -> dict[str, int]:
    """Have `workers` process `sources`, their outputs written to `out_dir` under each source's
    name; {FLOOR: outputs written}. TimeoutError if it takes over `TIMEOUT_S`."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    server = cluster.data_server(os.urandom(16))
    try:
        futures = {
            cluster.submit(
                worker, "process_direct", server.address, server.run_id, server.public_key
            ): worker
            for worker in workers
        }
        written = _serve(server, futures, [os.fspath(s) for s in sources], os.fspath(out_dir))
        for future, worker in futures.items():
            cluster.outcome(future, worker)
    finally:
        server.close()
    return {FLOOR: written}


def _serve(server, futures: dict, sources: list[str], out_dir: str) -> int:
    """Hand out chunks in `direct`'s form, write what comes back; how many outputs."""
    chunks = iter([sources[i : i + CHUNK] for i in range(0, len(sources), CHUNK)])
    held: dict[int, list[str]] = {}
    number = written = 0
    deadline = time.monotonic() + TIMEOUT_S
    while not all(future.done() for future in futures):
        if time.monotonic() > deadline:
            msg = f"the floor run did not end within {TIMEOUT_S:g} s; check the workers."
            raise TimeoutError(msg)
        for event in server.serve(0.05):
            if event.kind == "next":
                names = next(chunks, None)
                if names is None:
                    server.send_none(event.peer)
                    continue
                number += 1
                held[number] = names
                items = [
                    [position, [name, os.path.splitext(name)[1]]]  # noqa: PTH122 - text, per image
                    for position, name in enumerate(names)
                ]
                header = {"chunk": number, "transport": "encoded", "items": items}
                server.send_chunk(event.peer, header, [read_file(n) for n in names])
            elif event.kind == "result":
                names = held.pop(event.header["chunk"])
                for (position, _, _), frame in zip(event.header["done"], event.frames, strict=True):
                    # text, not pathlib: as on the route's hot path
                    atomic_write(f"{out_dir}/{names[position].rpartition('/')[2]}", frame.buffer)
                    written += 1
            elif event.kind == "bye":
                server.send_bye(event.peer)
    return written
