"""The README's capacity table, from a netns benchmark's JSON (`make bench-netns`): the modelled
images per second of 1 to 64 workers, min(N x worker rate, main rate, link rate), with every
link at 1 and at 10 Gbit/s, for the data route's two ways back and the best mix of them.

    .venv/bin/python -m benchmarks.capacity_table docs/bench/netns-bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imgdist.maincost import Route, mixed_capacity, modelled_capacity

WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
LINKS_GBIT = (1, 10)


def routes(report: dict) -> tuple[Route, Route]:
    """The JPEG and bits routes the benchmark measured (its `params.model.routes`)."""
    model = report["params"].get("model") or {}
    if len(model.get("routes", [])) != 2:
        msg = "this JSON has no capacity model: run the netns benchmark with the main-cost runs."
        raise SystemExit(msg)
    jpeg, bits = (Route(**route) for route in model["routes"])
    return jpeg, bits


def table(jpeg: Route, bits: Route) -> str:
    """Markdown: one row per worker count, per link speed the JPEG-only, bits-only and mixed rates."""
    head = ["workers"]
    for gbit in LINKS_GBIT:
        head += [f"{gbit} Gbit/s: JPEG back", "bits back", "best mix (limit)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n in WORKER_COUNTS:
        row = [str(n)]
        for gbit in LINKS_GBIT:
            links = {"main_link_bps": gbit * 1e9, "worker_link_bps": gbit * 1e9}
            only_jpeg = modelled_capacity(jpeg, n, **links)
            only_bits = modelled_capacity(bits, n, **links)
            mixed = mixed_capacity(jpeg, bits, n, **links)
            row += [
                f"{only_jpeg.images_per_s:,.0f}",
                f"{only_bits.images_per_s:,.0f}",
                f"{mixed.images_per_s:,.0f} ({mixed.route}; {mixed.limited_by})",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a netns benchmark's --json file")
    args = parser.parse_args()
    jpeg, bits = routes(json.loads(args.json.read_text()))
    for route in (jpeg, bits):
        print(
            f"{route.name}: main {route.main_ms:.3f} ms, worker {route.worker_ms:.3f} ms, "
            f"{route.bytes_per_image / 1000:.1f} KB per image"
        )
    print(table(jpeg, bits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
