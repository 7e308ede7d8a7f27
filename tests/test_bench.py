"""Benchee-style statistics, comparison, table and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgdist.bench import BenchReport, CaseStats, measure, percentile
from imgdist.benchsuite import parse_size
from imgdist.errors import ParameterError
from imgdist.render import bench_chart, bench_table_html, bench_table_text


def test_statistics_agree_with_numpy():
    """ips, average, deviation, median and 99th percentile as numpy computes them."""
    samples = [0.10, 0.12, 0.11, 0.30, 0.09]
    stats = CaseStats.of("case", samples)
    assert stats.average_s == pytest.approx(np.mean(samples))
    assert stats.ips == pytest.approx(1 / np.mean(samples))
    assert stats.deviation_pct == pytest.approx(np.std(samples, ddof=1) / np.mean(samples) * 100)
    assert stats.median_s == pytest.approx(np.median(samples))
    assert stats.p99_s == pytest.approx(np.percentile(samples, 99))
    assert percentile([1.0], 99) == 1.0


def test_measure_interleaves_and_counts_runs():
    """Each case runs warm-up + runs times, in turn."""
    calls = []
    report = measure(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=3, warmup_runs=1
    )
    assert calls == ["a", "b"] * 4
    assert [len(c.samples_s) for c in report.cases] == [3, 3]
    assert report.params["runs"] == 3
    assert report.machine["cpus"] >= 1


def test_measure_rejects_bad_settings():
    """No cases, or runs < 1, is a clear error."""
    with pytest.raises(ParameterError, match="runs = 0"):
        measure({"a": lambda: None}, runs=0)
    with pytest.raises(ParameterError, match="no cases"):
        measure({})


def report_of(**medians_ms: float) -> BenchReport:
    return BenchReport([CaseStats.of(name, [m / 1000] * 3) for name, m in medians_ms.items()])


def test_comparison_is_against_the_fastest():
    """The comparison lists fastest first and says how many times slower the others are."""
    report = report_of(**{"1 worker": 200.0, "2 workers": 100.0, "4 workers": 130.0})
    ranked = report.comparison()
    assert [c.name for c in ranked] == ["2 workers", "4 workers", "1 worker"]
    assert ranked[1].slower_by == pytest.approx(1.3)
    assert report.speedup("2 workers", "1 worker") == pytest.approx(2.0)


def test_text_table_reads_like_benchee():
    """Columns Name/ips/average/deviation/median/99th % and 'N.NNx slower' lines."""
    text = bench_table_text(
        report_of(**{"1 worker": 200.0, "4 workers": 260.0}), baseline="1 worker"
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "Name",
        "ips",
        "average",
        "deviation",
        "median",
        "99th",
        "%",
        "speed-up",
    ]
    assert "1 worker" in lines[1]
    assert "200.00 ms" in lines[1]
    assert "1.00x" in lines[1]
    assert "4 workers" in text
    assert "1.30x slower +60.00 ms" in text


def test_html_table_and_chart():
    """The HTML table has one row per case; the chart has one bar per case."""
    report = report_of(a=10.0, b=20.0)
    html = bench_table_html(report, baseline="a")
    assert html.count("<tr>") == 3
    assert "2.00x slower" in html
    assert "0.50x" in html
    figure = bench_chart(report)
    assert len(figure.axes[0].patches) == 2


def test_json_round_trip(tmp_path):
    """save/load keeps every case, with the documented keys."""
    report = report_of(a=10.0, b=20.0)
    path = report.save(tmp_path / "bench.json")
    data = json.loads(path.read_text())
    assert set(data) == {"cases", "machine", "params"}
    assert {"name", "samples_s", "median_s", "ips", "average_s", "deviation_pct", "p99_s"} <= set(
        data["cases"][0]
    )
    assert BenchReport.load(path).cases == report.cases


def test_speed_chart_answers_did_distribution_pay():
    """The notebook's chart: the own-process reference first, then 1/2/4 workers with the default
    and the Livebook's flow side by side, each labelled with its speed-up against the reference."""
    from imgdist.render import speed_chart

    report = report_of(
        **{
            "own process": 100.0,
            "1 worker": 110.0,
            "2 workers": 50.0,
            "4 workers": 40.0,
            "seed: 1 worker": 300.0,
            "seed: 2 workers": 250.0,
            "seed: 4 workers": 200.0,
        }
    )
    figure = speed_chart(report)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "own process",
        "1 worker",
        "2 workers",
        "4 workers",
    ]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(["1.00x", "0.91x", "2.00x", "2.50x", "0.33x", "0.40x", "0.50x"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "own process",
        "default flow",
        "Livebook's flow (seed)",
    ]
    assert "speed-up against the notebook's own process" in ax.get_title()


def test_timeline_chart_has_a_row_per_worker():
    """The schedule picture: one row per worker, one bar per span, the run's length on the axis."""
    from imgdist.render import timeline_chart
    from imgdist.results import RunResult, Span

    result = RunResult("path", "balanced", elapsed_s=0.5)
    result.timeline = [
        Span("b@h", 0.0, 0.2, 4),
        Span("a@h", 0.0, 0.1, 4),
        Span("a@h", 0.1, 0.45, 4),
    ]
    ax = timeline_chart(result).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a@h", "b@h"]
    assert [len(c.get_paths()) for c in ax.collections] == [2, 1]
    assert ax.get_xlim() == (0.0, 500.0)
    assert "12 images in 500 ms" in ax.get_title()


@pytest.mark.parametrize("text", ["640", "x480", "0x10", "axb"])
def test_bad_size(text):
    """--size must be WIDTHxHEIGHT with positive numbers."""
    with pytest.raises(ParameterError, match=rf"size '{text}' is not WIDTHxHEIGHT"):
        parse_size(text)
