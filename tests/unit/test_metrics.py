"""Metrics rendering: exact integers, cumulative buckets, quantile bounds."""

from translog.metrics import Histogram, Metrics, format_value


def test_values_render_exactly() -> None:
    assert format_value(1234567) == "1234567"
    assert format_value(2.0) == "2"
    assert format_value(0.125) == "0.125"
    m = Metrics()
    m.counter("c_total", "a counter")
    m.inc("c_total", 1234567, mode="single")
    m.gauge("g", "a gauge", lambda: 98765432)
    text = m.render()
    assert 'c_total{mode="single"} 1234567' in text
    assert "g 98765432" in text


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram("h", "help", (1, 10, 100))
    for v in (0.5, 5, 5, 50, 500):
        h.observe(v)
    lines = h.render()
    assert 'h_bucket{le="1"} 1' in lines
    assert 'h_bucket{le="10"} 3' in lines
    assert 'h_bucket{le="100"} 4' in lines
    assert 'h_bucket{le="+Inf"} 5' in lines
    assert h.quantile(0.5) == 10
    assert h.quantile(0.99) == float("inf")
