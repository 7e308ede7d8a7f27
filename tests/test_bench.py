"""Benchee-style statistics, comparison, table and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgdist.bench import BenchReport, CaseStats, measure, percentile
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
