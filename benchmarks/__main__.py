"""``make bench`` → ``python -m benchmarks``: every comparison of issue 6, side by side, in one run.

Prints the ratio table and (for a full run) writes docs/benchmarks.md. ``--only B1,B6`` selects
rows, ``--quick`` shrinks sizes and rounds for development (and writes no docs unless ``--docs``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.engine import engine_rows
from benchmarks.machine import describe
from benchmarks.model import Row
from benchmarks.report import print_table, write_markdown
from benchmarks.rows.client import fresh_fetch_row, warm_fetch_row
from benchmarks.rows.diagnose import diagnose_row
from benchmarks.rows.kernel import fill_ceiling_rows, native_vs_numpy_rows, slice_row
from benchmarks.rows.pretrained import checkpoint_rows, mean_rows_row
from benchmarks.rows.shards import shard_rows
from benchmarks.rows.small import small_request_rows
from benchmarks.rows.streaming import nginx_row, range_row, rss_row

ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B13", "B14", "P1", "P2", "P3")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

# Families in run order; each yields the rows of the keys it was given.
FAMILIES: list[tuple[frozenset[str], Callable[[Context, set[str]], list[Row]]]] = [
    (frozenset({"B1", "B2", "B3"}), lambda ctx, keys: engine_rows(ctx, keys)),
    (frozenset({"B4"}), lambda ctx, _keys: [fresh_fetch_row(ctx)]),
    (frozenset({"B5"}), lambda ctx, _keys: [warm_fetch_row(ctx)]),
    (frozenset({"B6"}), lambda ctx, _keys: [nginx_row(ctx)]),
    (frozenset({"B7"}), lambda ctx, _keys: small_request_rows(ctx)),
    (frozenset({"B8"}), lambda ctx, _keys: [range_row(ctx)]),
    (frozenset({"B9"}), lambda ctx, _keys: [rss_row(ctx)]),
    (frozenset({"B10"}), lambda ctx, _keys: [slice_row(ctx)]),
    (frozenset({"B11"}), lambda ctx, _keys: shard_rows(ctx)),
    (frozenset({"B12"}), lambda ctx, _keys: fill_ceiling_rows(ctx)),
    (frozenset({"B13"}), lambda ctx, _keys: native_vs_numpy_rows(ctx)),
    (frozenset({"P1"}), lambda ctx, _keys: [mean_rows_row(ctx)]),
    (frozenset({"P2", "P3"}), lambda ctx, keys: checkpoint_rows(ctx, keys)),
    (frozenset({"B14"}), lambda ctx, _keys: [diagnose_row(ctx)]),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", help="comma-separated rows, e.g. B1,B6 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 rounds (development)")
    parser.add_argument("--repeats", type=int, help="rounds per row (default 5; quick 3)")
    parser.add_argument("--docs", type=Path, help=f"write the report here (default for a full run: {DOCS})")
    parser.add_argument("--no-docs", action="store_true", help="do not write a report")
    args = parser.parse_args(argv)
    keys = {key.strip().upper() for key in (args.only or ",".join(ALL)).split(",") if key.strip()}
    if unknown := keys - set(ALL):
        parser.error(f"--only: unknown rows {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    args.keys = keys
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = Context(quick=args.quick, repeats=args.repeats or (3 if args.quick else 5))
    machine = describe()
    command = "python -m benchmarks" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started = time.monotonic()
    rows: list[Row] = []
    try:
        for family, run in FAMILIES:
            selected = set(family & args.keys)
            if selected:
                rows += run(ctx, selected)
    finally:
        ctx.close()
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print_table(rows)
    print(f"\n{len(rows)} rows in {elapsed / 60:.1f} min; {sum(row.met for row in rows)} meet their target.")
    full_run = not args.quick and args.keys == set(ALL)
    target = args.docs or (DOCS if full_run else None)
    if target is not None and not args.no_docs:
        write_markdown(target, rows, machine, command, elapsed, ctx.repeats)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
