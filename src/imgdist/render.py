"""Showing results to a person: image grids, the Benchee-style table (text and HTML) and the chart."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from imgdist.bench import BenchReport
from imgdist.codec import decode, encode, read_file
from imgdist.floor import FLOOR
from imgdist.image import Wire

THUMBNAIL_WIDTH = 200


def thumbnail(image: np.ndarray, width: int = THUMBNAIL_WIDTH) -> np.ndarray:
    """`image` scaled to `width` pixels wide (never enlarged)."""
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class ImageGrid:
    """Captioned thumbnails in columns; shows as HTML (JPEG thumbnails) in Jupyter."""

    thumbnails: list[bytes]
    captions: list[str]
    columns: int

    def _repr_html_(self) -> str:
        cells = []
        for jpeg, caption in zip(self.thumbnails, self.captions, strict=True):
            source = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
            text = "<br>".join(html.escape(line) for line in caption.splitlines())
            cells.append(
                f'<figure style="margin:4px;text-align:center"><img src="{source}" alt="{html.escape(caption)}" '
                f'style="max-width:100%"><figcaption style="font-size:11px">{text}</figcaption></figure>'
            )
        style = f"display:grid;grid-template-columns:repeat({self.columns}, max-content);gap:6px"
        return f'<div class="imgdist-grid" style="{style}">{"".join(cells)}</div>'

    def __repr__(self) -> str:
        return f"ImageGrid({len(self.captions)} images in {self.columns} columns: {', '.join(self.captions[:3])}...)"


def image_grid(
    images: Sequence[Path | np.ndarray], captions: Sequence[str], *, columns: int = 4
) -> ImageGrid:
    """Thumbnails of `images` in `columns` columns, each with its caption."""
    thumbnails = []
    for image in images:
        pixels = image if isinstance(image, np.ndarray) else decode(read_file(image), str(image))
        thumbnails.append(encode(thumbnail(pixels), ".jpg"))
    return ImageGrid(thumbnails, list(captions), columns)


def result_grid(result, *, columns: int = 4) -> ImageGrid:
    """The outputs of a run, each captioned with its file and the worker that processed it."""
    entries = result.processed
    return image_grid(
        [e.output for e in entries],
        [f"{e.output.name}\n{e.worker}" for e in entries],
        columns=columns,
    )


def show_image(image: Path | np.ndarray, caption: str = "") -> ImageGrid:
    """One image, captioned, at up to twice thumbnail size."""
    pixels = image if isinstance(image, np.ndarray) else decode(read_file(image), str(image))
    return ImageGrid([encode(thumbnail(pixels, 2 * THUMBNAIL_WIDTH), ".jpg")], [caption], 1)


def wire_summary(wire: Wire) -> str:
    """The Livebook's `{type, shape, binary}` as text."""
    return f"{{{wire.dtype!r}, {wire.shape}, <<{', '.join(str(b) for b in wire.data[:8])}, ...>> ({len(wire.data):,} bytes)}}"


# ----- the Benchee-style report -----------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def bench_table_text(report: BenchReport, *, baseline: str | None = None) -> str:
    """The table and comparison as Benchee prints them; with `baseline`, a speed-up column too."""
    width = max(len(c.name) for c in report.cases) + 2
    header = (
        f"{'Name':<{width}}{'ips':>10}{'average':>14}{'deviation':>12}{'median':>14}{'99th %':>14}"
    )
    if baseline:
        header += f"{'speed-up':>10}"
    lines = [header]
    for case in report.cases:
        line = (
            f"{case.name:<{width}}{case.ips:>10.2f}{_ms(case.average_s):>14}"
            f"{'±' + format(case.deviation_pct, '.2f') + '%':>12}{_ms(case.median_s):>14}{_ms(case.p99_s):>14}"
        )
        if baseline:
            line += f"{report.speedup(case.name, baseline):>9.2f}x"
        lines.append(line)
    lines += ["", "Comparison:"]
    for entry in report.comparison():
        line = f"{entry.name:<{width}}{entry.ips:>10.2f}"
        if entry.slower_by > 1.0 and entry.extra_s > 0:
            line += f" - {entry.slower_by:.2f}x slower +{_ms(entry.extra_s)}"
        lines.append(line)
    return "\n".join(lines)


def bench_table_html(report: BenchReport, *, baseline: str | None = None) -> str:
    """The same table as HTML, for the notebook."""
    heads = ["Name", "ips", "average", "deviation", "median", "99th %", "comparison"]
    if baseline:
        heads.append(f"speed-up vs {baseline}")
    ranked = {c.name: c for c in report.comparison()}
    rows = []
    for case in report.cases:
        entry = ranked[case.name]
        comparison = "fastest" if entry.slower_by <= 1.0 else f"{entry.slower_by:.2f}x slower"
        cells = [
            case.name,
            f"{case.ips:.2f}",
            _ms(case.average_s),
            f"±{case.deviation_pct:.2f}%",
            _ms(case.median_s),
            _ms(case.p99_s),
            comparison,
        ]
        if baseline:
            cells.append(f"{report.speedup(case.name, baseline):.2f}x")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"
    return f'<table class="imgdist-bench">{head}{"".join(rows)}</table>'


def bench_chart(
    report: BenchReport, *, title: str = "32 portraits, file to file", baseline: str | None = None
):
    """A bar chart of median time per case, with min-max error bars and speed-up labels."""
    import matplotlib.pyplot as plt

    names = [c.name for c in report.cases]
    medians = np.array([c.median_s * 1000 for c in report.cases])
    low = medians - np.array([c.min_s * 1000 for c in report.cases])
    high = np.array([c.max_s * 1000 for c in report.cases]) - medians
    reference = baseline or min(report.cases, key=lambda c: c.median_s).name
    figure, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0))
    bars = ax.bar(names, medians, yerr=[low, high], capsize=4, color="#4c78a8")
    for bar, case in zip(bars, report.cases, strict=True):
        label = f"{report.speedup(case.name, reference):.2f}x"
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, case.max_s * 1000),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("median time per run (ms)")
    ax.set_title(f"{title} (labels: speed-up vs {reference})")
    ax.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    plt.close(figure)
    return figure


def speed_chart(
    report: BenchReport,
    *,
    reference: str = "own process",
    seed_prefix: str = "seed: ",
    title: str = "32 portraits, file to file",
):
    """Did distribution pay? Median time per run of the reference (the job in this process) and
    of 1, 2, 4 workers side by side for the default flow and the Livebook's, with min-max error
    bars; each bar is labelled with its speed-up against the reference."""
    import matplotlib.pyplot as plt

    counts = [
        c.name for c in report.cases if c.name != reference and not c.name.startswith(seed_prefix)
    ]
    flows = [("default flow", "", "#4c78a8"), ("Livebook's flow (seed)", seed_prefix, "#f58518")]
    figure, ax = plt.subplots(figsize=(7.5, 4.0))
    ref = report.case(reference)
    positions = np.arange(len(counts)) + 1.0
    width = 0.38
    _bar(ax, report, [0.0], [ref], reference, "#54a24b", reference, width)
    ax.axhline(ref.median_s * 1000, color="#54a24b", linestyle="--", linewidth=1)
    for offset, (label, prefix, colour) in zip((-width / 2, width / 2), flows, strict=True):
        cases = [report.case(prefix + name) for name in counts if prefix + name in _names(report)]
        _bar(ax, report, positions[: len(cases)] + offset, cases, reference, colour, label, width)
    ax.set_xticks([0.0, *positions], [reference, *counts])
    ax.set_ylabel("median time per run (ms)")
    ax.set_title(f"{title}: speed-up against the notebook's {reference}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.margins(y=0.15)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _names(report: BenchReport) -> set[str]:
    return {c.name for c in report.cases}


def _bar(ax, report, positions, cases, reference, colour, label, width) -> None:
    medians = np.array([c.median_s * 1000 for c in cases])
    errors = [medians - [c.min_s * 1000 for c in cases], [c.max_s * 1000 for c in cases] - medians]
    ax.bar(positions, medians, width, yerr=errors, capsize=3, color=colour, label=label)
    for x, case in zip(positions, cases, strict=True):
        ax.annotate(
            f"{report.speedup(case.name, reference):.2f}x",
            (x, case.max_s * 1000),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def timeline_chart(result, *, title: str = "Who worked when"):
    """The run's schedule: one row per worker, one bar per batch or image from sent to done,
    coloured by worker, so idle gaps and the tail show at a glance."""
    import matplotlib.pyplot as plt

    workers = sorted({span.worker for span in result.timeline})
    colours = plt.get_cmap("tab10")
    figure, ax = plt.subplots(figsize=(8.0, 0.5 + 0.45 * max(1, len(workers))))
    for row, worker in enumerate(workers):
        bars = [
            (span.start_s * 1000, max(0.5, (span.end_s - span.start_s) * 1000))
            for span in result.timeline
            if span.worker == worker
        ]
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=colours(row % 10), edgecolor="white")
    ax.set_yticks(range(len(workers)), workers)
    ax.set_ylim(-0.6, len(workers) - 0.4)
    ax.set_xlim(0, max(result.elapsed_s * 1000, 1.0))
    ax.invert_yaxis()
    ax.set_xlabel("ms since the run started")
    images = sum(span.images for span in result.timeline)
    ax.set_title(f"{title}: {images} images in {result.elapsed_s * 1000:.0f} ms")
    figure.tight_layout()
    plt.close(figure)
    return figure


def scaling_table_text(points) -> str:
    """The scaling run as a table: images, median time, time per image, main's peak RSS."""
    lines = [f"{'images':>8}{'median':>12}{'per image':>12}{'main peak RSS':>16}"]
    for p in points:
        lines.append(
            f"{p.images:>8}{p.median_s * 1000:>10.1f}ms{p.per_image_ms:>10.3f}ms{p.peak_rss_mb:>13.1f} MB"
        )
    if len(points) > 1:
        first, last = points[0], points[-1]
        lines.append(
            f"time per image {last.images} vs {first.images}: {last.per_image_ms / first.per_image_ms:.2f}x; "
            f"peak RSS growth: {last.peak_rss_mb - first.peak_rss_mb:+.1f} MB"
        )
    return "\n".join(lines)


def main_cost_table_text(costs) -> str:
    """Per transport: CPU ms per image on the main's side and the workers', the ratio, and how
    many workers one main keeps busy; the floor's row, when measured, said in words."""
    header = (
        f"{'transport':<10}{'main':>9}{'controller':>12}{'main side':>11}{'workers':>10}"
        f"{'ratio':>8}{'workers fed':>13}"
    )
    lines = [header]
    for cost in costs:
        lines.append(
            f"{cost.transport:<10}{cost.main_ms:>7.3f}ms{cost.controller_ms:>10.3f}ms"
            f"{cost.main_side_ms:>9.3f}ms{cost.worker_ms:>8.3f}ms{cost.ratio:>8.3f}"
            f"{cost.workers_kept_busy:>13.1f}"
        )
    lines.append(
        "(CPU per image, marginal: a large run minus a small one; ratio = main side / workers)"
    )
    if any(cost.transport == FLOOR for cost in costs):
        lines.append(
            f"{FLOOR}: the main reads each input, moves the bytes, writes each output and keeps "
            "no books (the workers do the whole job): what any route costs at least"
        )
    for cost in costs:
        if cost.steps and cost.transport != FLOOR:
            shown = ", ".join(f"{count} {step}" for step, count in sorted(cost.steps.items()))
            lines.append(f"{cost.transport}'s images came back as: {shown}")
    return "\n".join(lines)
