"""Run the translog benchmarks: ``python -m benchmarks.run [--quick] [--large] [--only NAME]``.

Prints one table per benchmark (medians, and paired ratios to the same-run baselines) and
writes everything, with a description of the machine, to benchmarks/out/results-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks import (
    bench_append,
    bench_audit,
    bench_disk,
    bench_events,
    bench_http,
    bench_objstore,
    bench_proofs,
    bench_stall,
)
from benchmarks.common import OUT, Row, Settings, machine, progress

BENCHMARKS: dict[str, Callable[[Settings], list[Row]]] = {
    "append": bench_append.run,
    "proofs": bench_proofs.run,
    "disk": bench_disk.run,
    "http": bench_http.run,
    "audit": bench_audit.run,
    "objstore": bench_objstore.run,
    "events": bench_events.run,
    "stall": bench_stall.run,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes only (about 1 minute)")
    p.add_argument("--large", action="store_true", help="add 10^7 entries (append, proofs)")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (default 3)")
    p.add_argument(
        "--drop-caches",
        action="store_true",
        help="for cold reads also write /proc/sys/vm/drop_caches (system-wide)",
    )
    p.add_argument(
        "--no-sweep", action="store_true", help="append: skip the max_batch_entries sweep"
    )
    return p.parse_args(argv)


def _fmt(value: float, unit: str) -> str:
    if unit.endswith("/s") or unit == "entries":
        return f"{value:,.0f}"
    if unit == "B/entry":
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def print_table(name: str, rows: list[Row]) -> None:
    """One aligned table: case, median, unit, ratio to its baseline, note."""
    print(f"\n## {name}\n")
    width = max(len(r.case) for r in rows)
    for r in rows:
        ratio = f"{r.ratio:.3f}x {r.baseline}" if r.ratio is not None else ""
        median = _fmt(r.median, r.unit)
        print(f"{r.case:<{width}}  {median:>12} {r.unit:<9} {ratio}  {r.note}".rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, print the tables, write the JSON file."""
    args = parse_args(argv)
    settings = Settings(args.quick, args.large, args.reps, args.drop_caches, not args.no_sweep)
    facts = machine()
    progress("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    started = time.time()
    results: dict[str, list[Row]] = {}
    for name in args.only or list(BENCHMARKS):
        progress(f"running {name}")
        results[name] = BENCHMARKS[name](settings)
        print_table(name, results[name])
        sys.stdout.flush()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = OUT / f"results-{stamp}.json"
    doc = {
        "machine": facts,
        "settings": vars(args),
        "started": stamp,
        "seconds": round(time.time() - started, 1),
        "results": {k: [r.to_json() for r in v] for k, v in results.items()},
    }
    path.write_text(json.dumps(doc, indent=1))
    progress(f"wrote {path} after {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
