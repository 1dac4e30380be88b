"""Run benchmarks and record them: ``python -m benchmarks [NAME ...] [--quick] [--list]``.

Each ``benchmarks/bench_NAME.py`` exposes ``run(quick: bool) -> list[Result]``. Results are
merged into ``benchmarks/results.json`` (a rerun replaces the figures it measured; the rows it did not
measure stay, and are named: :func:`merge`)
and the table between the ``benchmarks`` markers of ``docs/benchmarks.md`` is rewritten from that file
(:func:`update_table`; ``python -c "import benchmarks.__main__ as b; b.update_table(b.load_results())"``
rewrites it without running anything).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import REPO
from catdog.fsutil import counted

RESULTS = REPO / "benchmarks" / "results.json"
TABLE_PAGE = REPO / "docs" / "benchmarks.md"  # the full table lives here, between START and END
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in (REPO / "benchmarks").glob("bench_*.py"))


def load_results() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def save_results(rows: list[dict]) -> None:
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


def table(rows: list[dict]) -> str:
    lines = [
        "| benchmark | figure | value | floor | machine | date | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = {True: " ✅", False: " ❌"}.get(r.get("passed"), "")
        value = f"{r['value']:.4g} {r['unit']}".strip()
        lines.append(
            f"| {r['benchmark']} | {r['figure']} | {value}{mark} | {r.get('floor', '')} | {r['machine']} | "
            f"{r['date']} | `{r['command']}` |"
        )
    return "\n".join(lines)


def update_table(rows: list[dict], page: Path = TABLE_PAGE) -> bool:
    """Rewrite the table between the markers of ``page``; False (and nothing written) without them."""
    if not page.exists():
        return False
    text = page.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{table(rows)}\n{END}{tail}", encoding="utf-8")
    return True


def merge(rows: list[dict], name: str, results: list[dict]) -> tuple[list[dict], list[str]]:
    """``rows`` with the figures ``results`` measured for benchmark ``name`` replaced, and the figures of kept rows.

    A row this run did not measure (a recipe not run this time: CATDOG_BENCH_TRAIN_RUNS, or the gpu
    recipes run by name) stays, with its own date and commit, and is named on the way: nothing is dropped
    silently. A figure no benchmark makes any more is removed from results.json by hand.
    """
    figures = {r["figure"] for r in results}
    keep = [r for r in rows if r["benchmark"] != name or r["figure"] not in figures]
    kept = [r["figure"] for r in keep if r["benchmark"] == name]
    return keep + results, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="smaller workloads; the whole suite in under 10 minutes")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--no-save", action="store_true", help="print results without writing results.json or docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown {'benchmark' if len(unknown) == 1 else 'benchmarks'}: {', '.join(unknown)}")
    rows = load_results()
    failed = []
    for name in names:
        start = time.perf_counter()
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            results = [r.to_dict() for r in module.run(quick=args.quick)]
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for r in results:
            if args.quick:
                r["notes"] = (r.get("notes", "") + " quick mode").strip()
            print(f"   {r['figure']}: {r['value']:.4g} {r['unit']}  {r.get('floor', '')}", flush=True)
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
        if not results:  # nothing to measure here (the GPU benchmark on a CPU): its earlier rows stay
            continue
        if not args.no_save:
            rows, kept = merge(rows, name, results)
            if kept:
                print(
                    f"   kept {counted(len(kept), 'earlier row')} this run did not measure: {'; '.join(kept)}",
                    flush=True,
                )
            save_results(rows)
            update_table(rows)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
