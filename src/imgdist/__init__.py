"""imgdist: the Livebook's distributed image processing, with ipyparallel engines as workers.

The names below are loaded on first use (PEP 562), so `import imgdist` and the command line
start fast, and a module is imported only when something of it is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "BenchReport": "imgdist.bench",
    "Cluster": "imgdist.cluster",
    "DEFAULT_SCHEDULE": "imgdist.defaults",
    "DEFAULT_TRANSPORT": "imgdist.defaults",
    "ImgdistError": "imgdist.errors",
    "OWN_PROCESS": "imgdist.speed",
    "RunResult": "imgdist.distribution",
    "Worker": "imgdist.cluster",
    "bench_chart": "imgdist.render",
    "bench_table_html": "imgdist.render",
    "bench_table_text": "imgdist.render",
    "brief_errors": "imgdist.params",
    "check_out_dir": "imgdist.runner",
    "distribute": "imgdist.distribution",
    "from_wire": "imgdist.image",
    "get_portrait": "imgdist.portrait",
    "image_grid": "imgdist.render",
    "join_instructions": "imgdist.cluster.connection",
    "make_copies": "imgdist.portrait",
    "measure": "imgdist.bench",
    "open_cluster": "imgdist.runner",
    "own_name": "imgdist.names",
    "parameters": "imgdist.params",
    "process_image": "imgdist.image",
    "result_grid": "imgdist.render",
    "save_image": "imgdist.transports",
    "show_image": "imgdist.render",
    "speed_chart": "imgdist.render",
    "speed_comparison": "imgdist.speed",
    "threshold_and_label": "imgdist.image",
    "timeline_chart": "imgdist.render",
    "to_wire": "imgdist.image",
    "wire_summary": "imgdist.render",
}


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        msg = f"module 'imgdist' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = [
    "DEFAULT_SCHEDULE",
    "DEFAULT_TRANSPORT",
    "OWN_PROCESS",
    "BenchReport",
    "Cluster",
    "ImgdistError",
    "RunResult",
    "Worker",
    "bench_chart",
    "bench_table_html",
    "bench_table_text",
    "brief_errors",
    "check_out_dir",
    "distribute",
    "from_wire",
    "get_portrait",
    "image_grid",
    "join_instructions",
    "make_copies",
    "measure",
    "open_cluster",
    "own_name",
    "parameters",
    "process_image",
    "result_grid",
    "save_image",
    "show_image",
    "speed_chart",
    "speed_comparison",
    "threshold_and_label",
    "timeline_chart",
    "to_wire",
    "wire_summary",
]
