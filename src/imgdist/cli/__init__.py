"""The command line: `imgdist run`, `imgdist worker`, `imgdist bench`, `imgdist notebook`.

One module per sub-command, each with its arguments (`add_parser`) and what it does
(`command`); heavy imports wait until a sub-command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from imgdist.cli import bench, notebook, run, worker
from imgdist.cli.common import EXIT_FAILED, EXIT_USAGE
from imgdist.errors import ImgdistError, RunError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the `run`, `worker`, `bench` and `notebook` sub-commands."""
    parser = argparse.ArgumentParser(
        prog="imgdist",
        description="Threshold a portrait's copies (or your images) on ipyparallel engines that draw their names.",
    )
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    for module in (run, worker, bench, notebook):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.command(args)
    except ImgdistError as exc:
        print(f"imgdist: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(exc, RunError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("imgdist: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the system said no: a sentence, not a traceback
        named = exc.filename2 or exc.filename  # a rename's target rather than its temporary file
        where = f" ({named})" if named else ""
        print(f"imgdist: error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
