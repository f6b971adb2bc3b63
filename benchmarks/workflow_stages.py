#!/usr/bin/env python
"""Wall time and peak memory of every workflow stage of a finished run, per rule (issue 8).

Every rule writes a Snakemake benchmark file (``OUT/logs/benchmarks/<rule>/...tsv``: wall seconds
``s``, peak resident memory ``max_rss`` in MB, CPU seconds ``cpu_time``). This script reads them
and prints one line per job and a total per rule, so any run (the demo, a real dataset, a cluster
run) is its own benchmark.

Usage:
    .venv/bin/python benchmarks/workflow_stages.py OUT            # after `tmstarget BIDS OUT ...`
    .venv/bin/python benchmarks/workflow_stages.py --demo         # builds and runs the demo first
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def read_benchmarks(out_dir: Path) -> pd.DataFrame:
    root = Path(out_dir) / "logs" / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            continue
        last = table.iloc[-1]
        rel = path.relative_to(root)
        rows.append({"rule": rel.parts[0].removesuffix(".tsv"), "job": rel.with_suffix("").as_posix(),
                     "wall_s": float(last["s"]), "cpu_s": float(last.get("cpu_time", float("nan"))),
                     "peak_rss_mb": float(last["max_rss"]) if last["max_rss"] != "-" else float("nan")})
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first (tmstarget BIDS {out_dir} ...)")
    return pd.DataFrame(rows)


def report(table: pd.DataFrame) -> str:
    lines = [f"{'job':60s} {'wall s':>8s} {'cpu s':>8s} {'peak MB':>8s}"]
    for row in table.itertuples():
        lines.append(f"{row.job:60s} {row.wall_s:8.1f} {row.cpu_s:8.1f} {row.peak_rss_mb:8.0f}")
    per_rule = table.groupby("rule").agg(jobs=("job", "count"), wall_s=("wall_s", "sum"),
                                         peak_rss_mb=("peak_rss_mb", "max"))
    lines += ["", f"{'stage (rule)':28s} {'jobs':>5s} {'wall s':>8s} {'peak MB':>8s}"]
    for rule, row in per_rule.sort_values("wall_s", ascending=False).iterrows():
        lines.append(f"{rule:28s} {int(row.jobs):5d} {row.wall_s:8.1f} {row.peak_rss_mb:8.0f}")
    lines.append(f"{'all jobs (sequential sum)':28s} {len(table):5d} {table.wall_s.sum():8.1f} "
                 f"{table.peak_rss_mb.max():8.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", help="output folder of a finished tmstarget run")
    p.add_argument("--demo", action="store_true", help="build the 2-subject demo and run it first")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    if args.demo:
        work = Path(args.out_dir or tempfile.mkdtemp(prefix="tmstarget_bench_"))
        bids, out = work / "bids", work / "out"
        exe = [sys.executable, "-m", "tmstarget.run.cli"]
        if not (bids / "dataset_description.json").exists():
            subprocess.run(exe + ["demo-data", str(bids)], check=True)
        subprocess.run(exe + [str(bids), str(out), "group", "--config", str(REPO / "config" / "demo.yaml"),
                              "--cores", str(args.cores)], check=True)
        args.out_dir = out
    if not args.out_dir:
        p.error("give OUT or --demo")
    print(report(read_benchmarks(Path(args.out_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
