"""imgdist: the Livebook's distributed image processing, with ipyparallel engines as workers."""

__version__ = "0.2.0"

from imgdist.bench import BenchReport, measure
from imgdist.cluster import Cluster, Worker
from imgdist.distribute import DEFAULT_SCHEDULE, DEFAULT_TRANSPORT, RunResult, distribute
from imgdist.errors import ImgdistError
from imgdist.image import from_wire, process_image, threshold_and_label, to_wire
from imgdist.params import brief_errors, parameters
from imgdist.portrait import get_portrait, make_copies
from imgdist.render import (
    bench_chart,
    bench_table_html,
    bench_table_text,
    image_grid,
    result_grid,
    show_image,
    speed_chart,
    timeline_chart,
    wire_summary,
)
from imgdist.runner import (
    OWN_PROCESS,
    check_out_dir,
    join_instructions,
    open_cluster,
    speed_comparison,
)
from imgdist.transports import save_image
from imgdist.workers import own_name

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
