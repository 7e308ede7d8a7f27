"""Executing a notebook headless (what `make run` does), with parameters passed as IMGDIST_* variables."""

from __future__ import annotations

import os
from pathlib import Path

from imgdist.errors import ImgdistError
from imgdist.params import PREFIX


def execute(
    notebook: Path, output: Path, *, parameters: dict | None = None, timeout_s: float = 600.0
) -> Path:
    """Run `notebook` top to bottom in a fresh kernel and save the executed copy as `output`."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook, output = Path(notebook).resolve(), Path(output).resolve()
    if not notebook.is_file():
        msg = f"notebook {notebook} does not exist; run from the repository's top folder or pass --notebook."
        raise ImgdistError(msg)
    nb = nbformat.read(notebook, as_version=4)
    saved = dict(os.environ)
    os.environ.update({PREFIX + k.upper(): str(v) for k, v in (parameters or {}).items()})
    try:
        client = NotebookClient(
            nb,
            timeout=timeout_s,
            kernel_name="python3",
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        try:
            client.execute()
        except CellExecutionError as exc:
            output.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, output)
            msg = f"{notebook.name} stopped with an error; the executed notebook is in {output}.\n{exc}"
            raise ImgdistError(msg) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, output)
    return output


def execute_main(notebook: Path, out_dir: Path, *, timeout_s: float = 600.0) -> int:
    """`make run`: execute the main notebook into `out_dir` and print the table and where files are."""
    from imgdist.bench import BenchReport
    from imgdist.render import bench_table_text
    from imgdist.speed import OWN_PROCESS

    out_dir = Path(out_dir).resolve()
    executed = execute(
        notebook, out_dir / "main.ipynb", parameters={"out_dir": out_dir}, timeout_s=timeout_s
    )
    report = BenchReport.load(out_dir / "bench.json")
    baseline = OWN_PROCESS if OWN_PROCESS in {case.name for case in report.cases} else None
    print(bench_table_text(report, baseline=baseline))
    print()
    print(f"Executed notebook: {executed}")
    print(f"Images and outputs: {out_dir / 'images'}")
    print(f"Manifest: {out_dir / 'manifest.json'}")
    print(f"Speed comparison: {out_dir / 'bench.json'}, {out_dir / 'bench.png'}")
    print(f"Who worked when: {out_dir / 'timeline.png'}")
    return 0
