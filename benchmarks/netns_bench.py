"""The multi-host benchmark (needs root): `fast` against `seed` on 2 workers on other test hosts,
their links shaped to 100 Mbit/s (and 5 ms delay where the kernel has netem); and, first, what
the main's side costs against the workers' per image (CPU counted per process, links unshaped).

    sudo .venv/bin/python -m benchmarks.netns_bench --images 32 --runs 10 --json results/netns-bench.json

The outer run builds the test network (tests/netns.py) and starts the workers; the inner run,
in the main host, starts the controller and measures, Benchee-style and interleaved.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.netns import TestNetwork, namespaces_usable

CASES = {
    "seed": {"transport": "pixels", "schedule": "round-robin"},
    "encoded": {"transport": "encoded"},
    "compact": {"transport": "compact"},
    "fast": {},
}
MAIN_COST_TRANSPORTS = ("direct", "encoded", "compact", "floor")


def inner(args: argparse.Namespace) -> int:
    """In the main host: controller on its address, wait for the two workers, measure."""
    from imgdist.bench import measure
    from imgdist.cluster import Cluster
    from imgdist.connections import wait_for_workers
    from imgdist.distribution import distribute
    from imgdist.portrait import make_copies, sample_portrait
    from imgdist.render import bench_table_text, main_cost_table_text

    out = Path(args.out)
    with Cluster.start_local(0, controller_ip=args.ip, profile_dir=out / "profile") as cluster:
        (out / "engine-file").write_text(str(cluster.engine_connection_file))
        names = [f"worker{i}@h{i}host" for i in range(1, args.workers + 1)]
        workers = wait_for_workers(cluster, names, timeout_s=60)
        copies = make_copies(
            sample_portrait(), max(args.images, args.large), out / "data" / "images"
        )
        costs = [] if args.skip_main_cost else main_costs(cluster, workers, copies, out, args)
        model = capacity_model(costs, copies[0], len(workers), tc_rate_bps(args.rate))
        (out / "shape-now").write_text("")  # the outer run shapes the links now
        deadline = time.monotonic() + 60
        while not (out / "shaped").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        link = (out / "shaped").read_text() if (out / "shaped").exists() else "unshaped"
        copies = copies[: args.images]

        def case(options):
            def run():
                result = distribute(workers, copies, out_dir=out / "data" / "outputs", **options)
                assert result.ok, result.summary()

            return run

        cases = {f"{name}/{len(workers)}": options for name, options in CASES.items()}
        transports = {
            name: distribute(workers, copies[:1], out_dir=out / "data" / "outputs", **o).transport
            for name, o in cases.items()
        }
        # how the images of one fast/2 run came back: which steps the measurements chose
        steps = distribute(workers, copies, out_dir=out / "data" / "outputs").steps
        report = measure(
            {name: case(o) for name, o in cases.items()},
            runs=args.runs,
            warmup_runs=1,
            params={
                "images": args.images,
                "link": link,
                "transports": transports,
                "fast_steps": steps,
                "main_cost": [cost.to_json() for cost in costs],
                "model": model,
                "outputs_on": filesystem_type(out / "data"),
            },
        )
        print(main_cost_table_text(costs))
        fast, seed = f"fast/{len(workers)}", f"seed/{len(workers)}"
        print(bench_table_text(report, baseline=seed))
        print(f"{fast} vs {seed}: {report.speedup(fast, seed):.1f}x faster (by median)")
        print(f"{fast}'s images came back as: {steps}; outputs on {filesystem_type(out / 'data')}")
        if model:
            measured = args.images / report.case(fast).median_s
            print(
                f"{fast}: {measured:.0f} images/s measured; the capacity model says "
                f"{model['images_per_s']:.0f} ({model['route']}, limited by {model['limited_by']})"
            )
        if args.json:
            report.save(Path(args.json))
    return 0


def filesystem_type(path: Path) -> str:
    """The type of the file system `path` is on (ext4, tmpfs, ...), from /proc/mounts: the
    main's cost per image depends on it (creating a file costs ~4x more on this VM's ext4)."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if len(fields) > 2 and inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def tc_rate_bps(rate: str) -> float:
    """tc's rate ('100mbit', '1gbit', '500kbit') in bits per second."""
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3, "bit": 1.0}
    for unit, factor in units.items():
        if rate.lower().endswith(unit):
            return float(rate[: -len(unit)]) * factor
    msg = f"--rate {rate!r} is not a tc rate; give e.g. 100mbit or 1gbit."
    raise SystemExit(msg)


def capacity_model(costs: list, image: Path, workers: int, rate_bps: float) -> dict:
    """The capacity model for this test bed: the measured CPU per image (direct: the JPEG comes
    back; compact's main and worker cost for the bits), the bytes of one portrait and its
    output, each worker's link at `rate_bps`, the main's unshaped, all hosts on this machine's
    cores."""
    import os

    from imgdist.codec import decode, encode, read_file
    from imgdist.image import pack_mostly_binary, threshold_and_label
    from imgdist.maincost import Route, mixed_capacity

    by_name = {cost.transport: cost for cost in costs}
    if not {"direct", "compact"} <= set(by_name):
        return {}
    data = read_file(image)
    output = threshold_and_label(decode(data, image.name), "worker1@h1host")
    direct, compact = by_name["direct"], by_name["compact"]
    jpeg = Route(
        "JPEG back", direct.main_side_ms, direct.worker_ms, len(data) + len(encode(output, ".jpg"))
    )
    bits = Route(
        "bits back", compact.main_ms, compact.worker_ms, len(data) + len(pack_mostly_binary(output))
    )
    capacity = mixed_capacity(
        jpeg,
        bits,
        workers,
        main_link_bps=1e12,
        worker_link_bps=rate_bps,
        shared_cores=os.cpu_count() or 1,
    )
    return {
        "routes": [vars(jpeg), vars(bits)],
        "worker_link_bps": rate_bps,
        "workers": workers,
        "route": capacity.route,
        "images_per_s": capacity.images_per_s,
        "limited_by": capacity.limited_by,
    }


def main_costs(cluster, workers, copies, out: Path, args: argparse.Namespace) -> list:
    """Main side against workers per image, across the hosts, links unshaped."""
    from imgdist.benchsuite import main_cost_runs
    from imgdist.maincost import marginal_costs

    return marginal_costs(
        main_cost_runs(cluster, workers, copies, out / "data" / "cost", MAIN_COST_TRANSPORTS),
        controller_pid=cluster.controller_pid,
        worker_pids=[w.pid for w in workers],
        small=args.small,
        large=args.large,
    )


def outer(args: argparse.Namespace) -> int:
    reason = namespaces_usable()
    if reason:
        print(f"netns benchmark skipped: {reason}", file=sys.stderr)
        return 2
    hosts = [f"h{i}" for i in range(1, args.workers + 1)]
    with TestNetwork(["main", *hosts]) as net, tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        # the main's images: hidden from the workers, who share no disk with it
        (out / "data").mkdir()
        link = f"{args.rate} (tbf) after the main-cost runs on unshaped links"
        json_path = str(Path(args.json).resolve()) if args.json else ""
        main = net.popen(
            "main",
            [
                sys.executable,
                "-m",
                "benchmarks.netns_bench",
                "--inner",
                "--ip",
                net.address("main"),
                "--out",
                str(out),
                "--images",
                str(args.images),
                "--runs",
                str(args.runs),
                "--small",
                str(args.small),
                "--large",
                str(args.large),
                "--workers",
                str(args.workers),
                "--rate",
                args.rate,
                *(["--skip-main-cost"] if args.skip_main_cost else []),
                "--link",
                link,
                *(["--json", json_path] if json_path else []),
            ],
            hostname="mainhost",
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 60
        while not (out / "engine-file").exists():
            if time.monotonic() > deadline or main.poll() is not None:
                print("the main host did not start its controller", file=sys.stderr)
                return 1
            time.sleep(0.1)
        engine_file = (out / "engine-file").read_text()
        for index, host in enumerate(hosts, start=1):
            net.popen(
                host,
                [
                    sys.executable,
                    "-m",
                    "imgdist",
                    "worker",
                    "--connection",
                    engine_file,
                    "--name",
                    f"worker{index}",
                ],
                hostname=f"{host}host",
                hide=(out / "data",),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 1800
        while not (out / "shape-now").exists():
            if main.poll() is not None:
                return main.returncode
            if time.monotonic() > deadline:
                print("the main host did not finish its main-cost runs in time", file=sys.stderr)
                return 1  # the test network's exit stops it
            time.sleep(0.2)
        link = "; ".join(net.shape(h, rate=args.rate, delay=args.delay) for h in hosts)
        (out / "shaped").write_text(link)
        code = main.wait(timeout=1800)
        print(f"links: {link}")
        return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--small", type=int, default=64, help="main cost: the small run")
    parser.add_argument("--skip-main-cost", action="store_true", help="only the speed comparison")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts (default: 2)")
    parser.add_argument("--large", type=int, default=1024, help="main cost: the large run")
    parser.add_argument("--rate", default="100mbit")
    parser.add_argument("--delay", default="5ms")
    parser.add_argument("--json", default="")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ip", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--link", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
