"""Prometheus-style metrics: counters, gauges and fixed-bucket histograms, rendered as text.

Pure and tiny on purpose (no client library): values are only ever touched from the event
loop thread or, for histograms fed by the writer thread, with single atomic list updates.
Nothing secret is ever a label value.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def format_value(value: float) -> str:
    """A sample value in Prometheus text: integers exactly, other floats with full precision."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))


class Histogram:
    """Cumulative histogram with fixed upper bounds."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (inf if beyond the last bound)."""
        if not self.count:
            return 0.0
        target = q * self.count
        seen = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            seen += n
            if seen >= target:
                return bound
        return math.inf

    def render(self) -> list[str]:
        """Prometheus text lines."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.sum:.6f}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Metrics:
    """A registry of counters, gauges (callables read at render time) and histograms."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.histograms: dict[str, Histogram] = {}

    def counter(self, name: str, help_text: str) -> None:
        """Declare a counter."""
        self.counters.setdefault(name, (help_text, {}))

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Increment a declared counter."""
        key = tuple(sorted(labels.items()))
        values = self.counters[name][1]
        values[key] = values.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter."""
        return self.counters[name][1].get(tuple(sorted(labels.items())), 0)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Declare a gauge read at render time."""
        self.gauges[name] = (help_text, read)

    def histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> Histogram:
        """Declare (or fetch) a histogram."""
        if name not in self.histograms:
            self.histograms[name] = Histogram(name, help_text, buckets)
        return self.histograms[name]

    def render(self) -> str:
        """The whole registry in the Prometheus text exposition format."""
        lines: list[str] = []
        for name, (help_text, values) in sorted(self.counters.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            if not values:
                lines.append(f"{name} 0")
            for key, v in sorted(values.items()):
                label = ",".join(f'{k}="{val}"' for k, val in key)
                text = format_value(v)
                lines.append(f"{name}{{{label}}} {text}" if label else f"{name} {text}")
        for name, (help_text, read) in sorted(self.gauges.items()):
            value = format_value(read())
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        for _, hist in sorted(self.histograms.items()):
            lines += hist.render()
        return "\n".join(lines) + "\n"
