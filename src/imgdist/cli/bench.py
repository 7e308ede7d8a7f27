"""`imgdist bench`: the flows against the one-process job and the peers; the main's cost."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgdist.cli.common import EXIT_OK, comma_list, whole_numbers


def add_parser(sub) -> None:
    """The `bench` sub-command's arguments."""
    bench = sub.add_parser(
        "bench",
        help="benchmark imgdist's flows against local and the peers",
        description="Benchee-style, interleaved runs of the same file-to-file job: local, "
        "seed/1,2,4 (the Livebook's flow), fast/1,2,4 (the defaults), "
        "multiprocessing, process-pool and dask, and split/2,4 (the machine's ceiling).",
    )
    bench.add_argument(
        "--images", type=int, default=32, metavar="N", help="copies of the portrait (default: 32)"
    )
    bench.add_argument(
        "--size", default="", metavar="WxH", help="rescale the portrait (default: its own size)"
    )
    bench.add_argument(
        "--runs", type=int, default=10, metavar="N", help="measured runs per case (default: 10)"
    )
    bench.add_argument(
        "--warmup", type=int, default=2, metavar="N", help="warm-up runs per case (default: 2)"
    )
    bench.add_argument(
        "--cases",
        type=comma_list,
        default=[],
        metavar="NAME[,NAME...]",
        help="cases to run (default: all: local, seed/1,2,4, fast/1,2,4, multiprocessing, "
        "process-pool, dask, split/2,4)",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    bench.add_argument("--plot", type=Path, metavar="FILE", help="write the chart as PNG")
    bench.add_argument(
        "--main-cost",
        action="store_true",
        help="instead: CPU per image on the main's side (main + controller) against the "
        "workers', per transport, on 2 local engines (64 vs 1,024 images)",
    )
    bench.add_argument(
        "--scaling",
        type=whole_numbers,
        default=[],
        metavar="N[,N...]",
        help="instead: fast/2 on each number of images; time per image and main's peak RSS",
    )

    bench.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    from imgdist.benchsuite import ALL_CASES, parse_size, run_bench, run_main_cost, run_scaling
    from imgdist.maincost import save_main_cost
    from imgdist.render import (
        bench_chart,
        bench_table_text,
        main_cost_table_text,
        scaling_table_text,
    )

    if args.scaling:
        print(scaling_table_text(run_scaling(args.scaling)))
        return EXIT_OK
    if args.main_cost:
        costs = run_main_cost()
        print(main_cost_table_text(costs))
        if args.json:
            save_main_cost(args.json, costs)
            print(f"JSON: {args.json}")
        return EXIT_OK
    names = args.cases or list(ALL_CASES)
    size = parse_size(args.size)
    print(
        f"Benchmarking {len(names)} cases on {args.images} images, {args.runs} runs each ...",
        flush=True,
    )
    report = run_bench(
        names, n_images=args.images, size=size, runs=args.runs, warmup_runs=args.warmup
    )
    baseline = "local" if "local" in names else None
    print(bench_table_text(report, baseline=baseline))
    if args.json:
        report.save(args.json)
        print(f"JSON: {args.json}")
    if args.plot:
        title = f"{args.images} portraits ({report.params['size']}), file to file"
        bench_chart(report, title=title, baseline=baseline).savefig(args.plot, dpi=100)
        print(f"Chart: {args.plot}")
    return EXIT_OK
