"""`imgdist notebook`: execute the main notebook headless into an output folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    """The `notebook` sub-command's arguments."""
    notebook = sub.add_parser(
        "notebook", help="execute notebooks/main.ipynb headless into an output folder"
    )
    notebook.add_argument("--notebook", type=Path, default=Path("notebooks/main.ipynb"))
    notebook.add_argument("--out", type=Path, default=Path("results"))
    notebook.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="per cell (default: 600)"
    )
    notebook.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    from imgdist.notebook import execute_main

    return execute_main(args.notebook, args.out, timeout_s=args.timeout)
