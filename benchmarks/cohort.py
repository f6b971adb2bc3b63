"""What a cohort costs before any science runs (issue 23, item 4): planning, dry run, one job's parse, group report.

    python benchmarks/cohort.py run [--quick | --sizes 10 100 1000] [--routes raw fmriprep]
                                            # writes <bench>/cohort.json
    python benchmarks/cohort.py docs        # writes docs/cohort_benchmark.md from that JSON only
    make cohort-docs                        # both, from an empty bench folder

``<bench>`` is ``$TMSTARGET_COHORT_BENCH`` (default ``~/.cache/tmstarget/cohort``). A cohort of N subjects
is N hard-linked copies of one subject (same inodes, so disk use stays flat; JSON/TSV sidecars are copied
with the label fixed inside), for two routes:

- ``raw``: sub-01 of the demo dataset (``tmstarget demo-data``), preprocessed by the built-in route;
- ``fmriprep``: a mini fMRIPrep derivatives tree (``tests/builders/mini_fmriprep.py``, 160 volumes) beside a
  raw sub-01 (``tests/builders/bids.py``).

For each route and N this measures, each in a fresh process (wall seconds and CPU seconds of the process
and its children, ``resource.getrusage(RUSAGE_CHILDREN)``; the 1-minute load average at the end of each
measurement beside it, the machine being shared):

- planning: ``tmstarget.bids.inputs.make_plan(config)`` (the call itself, timed inside the process);
- the dry run: ``tmstarget BIDS OUT participant --dry-run --cores 2`` from an empty OUT;
- one job's parse: ``snakemake --snakefile workflow/Snakefile --configfile OUT/logs/config.dry-run.yaml
  --directory OUT -n <target JSON of the first subject>`` after that dry run, as a cluster job starts
  (whatever the dry run left in OUT for later parses is used);
- the group report: ``tmstarget.report.build_group_report`` on ``tmstarget.qc.group.unit_group_entries``
  of N units whose outputs are hard-linked copies of the one subject's real outputs (the workflow run once
  on the source subject), with the size of the HTML.

Every number of docs/cohort_benchmark.md is formatted from the JSON (``render`` is pure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

from reliability_bench import git_commit  # noqa: E402
from reliability_docs import _table, fmt, write_page  # noqa: E402

SIZES = (10, 100, 1000)
QUICK_SIZES = (10, 100)
ROUTES = ("raw", "fmriprep")
OUT_DOC = REPO / "docs" / "cohort_benchmark.md"
SNAKEFILE = REPO / "workflow" / "Snakefile"
DEMO_CONFIG = REPO / "config" / "demo.yaml"
#: the fMRIPrep source subject's one workflow run (its outputs feed the group report): few resamples
FAST_CONFIG = "targeting:\n  bootstrap_samples: 10\n  split_half_max_splits: 4\n"
SOURCE_LABEL = "01"
#: text files of a subject copied with the label fixed inside (everything else is hard-linked)
TEXT_SUFFIXES = (".json", ".tsv", ".txt")
TEXT_MAX_BYTES = 1_000_000
#: issue 23's acceptance figures (the page states each beside the measured one)
THRESHOLDS = {"planning_wall_s": 30.0, "job_parse_wall_s": 2.0, "job_parse_flat_ratio": 1.25,
              "dry_run_wall_s": 60.0, "group_report_wall_s": 30.0, "group_report_html_bytes": 5_000_000,
              "dry_run_100_raw_cpu_s": 10.0}


def bench_dir() -> Path:
    return Path(os.environ.get("TMSTARGET_COHORT_BENCH", Path.home() / ".cache" / "tmstarget" / "cohort"))


def labels_for(n: int) -> list[str]:
    """``0001``, ``0002``, ... (four digits up to 9999: names sort as numbers)."""
    return [f"{i:0{max(4, len(str(n)))}d}" for i in range(1, n + 1)]


# ----------------------------------------------------------------------------- cohorts
def _renamed(rel: Path, old: str, new: str) -> Path | None:
    """``rel`` with the subject ``old`` renamed ``new`` in every folder and file name; None when ``rel`` belongs
    to another subject. ``old``/``new`` are full labels (``sub-01``)."""
    parts = []
    for part in rel.parts:
        if part == old or part.startswith(old + "_"):
            part = new + part[len(old):]
        elif part.startswith("sub-"):
            return None
        parts.append(part)
    return Path(*parts)


def _subject_specific(rel: Path) -> bool:
    return any(p.startswith("sub-") for p in rel.parts)


def _put(src: Path, dst: Path, old: str, new: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix in TEXT_SUFFIXES and src.stat().st_size <= TEXT_MAX_BYTES:
        dst.write_text(src.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    else:
        os.link(src, dst)


def build_cohort(source: Path, dest: Path, labels: list[str], source_label: str = SOURCE_LABEL) -> Path:
    """``dest``: the dataset ``source`` with its subject ``source_label`` as the subjects ``labels``.

    Every file of the subject (raw, ``derivatives/*`` and ``sourcedata/*`` alike) is hard-linked under each new
    label with the label fixed in folder and file names; JSON/TSV/TXT files are copied with the label fixed
    inside too. Files of other subjects are left out; dataset-level files are copied, ``participants.tsv``
    with one row per label (the source subject's row repeated). ``dest`` must not exist.
    """
    source, dest = Path(source), Path(dest)
    old = f"sub-{source_label}"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for src in files:
        rel = src.relative_to(source)
        if _subject_specific(rel):
            if _renamed(rel, old, old) is None:
                continue
            for label in labels:
                _put(src, dest / _renamed(rel, old, f"sub-{label}"), old, f"sub-{label}")
        elif rel.name == "participants.tsv":
            head, *rows = src.read_text(encoding="utf-8").splitlines()
            row = next((r for r in rows if r.split("\t")[0] == old), None)
            rest = row.split("\t")[1:] if row else ["n/a"] * (len(head.split("\t")) - 1)
            dest.joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
            dest.joinpath(rel).write_text("\n".join([head] + ["\t".join([f"sub-{lb}", *rest]) for lb in labels]) + "\n")
        else:
            dest.joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def fake_unit_outputs(deriv_src: Path, deriv_dest: Path, labels: list[str], source_label: str = SOURCE_LABEL) -> Path:
    """``deriv_dest`` (an ``OUT/tmstarget``) with the source subject's outputs under every label: its folder and
    its report page, renamed as in :func:`build_cohort` (dataset-level files such as a group report are not
    copied)."""
    old = f"sub-{source_label}"
    for src in sorted(p for p in deriv_src.rglob("*") if p.is_file()):
        rel = src.relative_to(deriv_src)
        if not _subject_specific(rel) or _renamed(rel, old, old) is None:
            continue
        for label in labels:
            _put(src, deriv_dest / _renamed(rel, old, f"sub-{label}"), old, f"sub-{label}")
    return deriv_dest


# ----------------------------------------------------------------------------- the source subjects
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "tmstarget.run.cli", *map(str, args)]


def _check(cmd, log_path: Path, **kw) -> None:
    with open(log_path, "w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({res.returncode}); see {log_path}")


def source_config(bench: Path, route: str) -> Path:
    if route == "raw":
        return DEMO_CONFIG
    path = bench / "source" / route / "fast.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAST_CONFIG)
    return path


def prepare_source(bench: Path, route: str, log) -> Path:
    """``<bench>/source/<route>``: ``bids/`` with one subject and ``out/``, the workflow run on it once."""
    root = bench / "source" / route
    bids, out = root / "bids", root / "out"
    if not (bids / "dataset_description.json").exists():
        shutil.rmtree(bids, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        if route == "raw":
            _check(_cli("demo-data", bids), root / "demo-data.log")
        else:
            from builders.bids import make_raw_bids
            from builders.mini_fmriprep import make_mini_fmriprep

            tmp = root / "bids.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            make_raw_bids(tmp, subjects=(SOURCE_LABEL,), n_vols=160)
            make_mini_fmriprep(tmp / "derivatives" / "fmriprep", sub=SOURCE_LABEL)
            tmp.rename(bids)
        log(f"{route}: source dataset in {bids}")
    verdict = out / "tmstarget" / f"sub-{SOURCE_LABEL}" / f"sub-{SOURCE_LABEL}_desc-verdict_qc.json"
    if not verdict.exists():
        log(f"{route}: running the workflow once on sub-{SOURCE_LABEL} (its outputs feed the group report)")
        t0 = time.time()
        _check(_cli(bids, out, "participant", "--participant-label", SOURCE_LABEL, "--config",
                    source_config(bench, route), "--cores", "2"), root / "workflow.log")
        log(f"{route}: source workflow done ({time.time() - t0:.0f} s)")
    return root


# ----------------------------------------------------------------------------- measuring
def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(cmd: list[str], stdout_path: Path) -> dict:
    """Run ``cmd`` (stdout and stderr to ``stdout_path``): its wall and CPU seconds (children included), the
    1-minute load average at the end, the number of output lines; a failure stops the benchmark."""
    cpu0, t0 = _cpu_children(), time.perf_counter()
    with open(stdout_path, "w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    text = stdout_path.read_text(errors="replace")
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{text[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_1min": round(os.getloadavg()[0], 2),
            "output_lines": text.count("\n"), "output": text}


PLAN_CHILD = """
import json, sys, time
from tmstarget.config.settings import load_config
from tmstarget.bids.inputs import make_plan
config = load_config(sys.argv[1], {"bids_dir": sys.argv[2], "output_dir": sys.argv[3]})
t0, c0 = time.perf_counter(), time.process_time()
plan = make_plan(config)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
first = sorted(plan.units.values(), key=lambda u: u.unit)[0]
print("PLAN " + json.dumps({"wall_s": wall, "cpu_s": cpu, "units": len(plan.units), "space": plan.space,
                            "route": plan.route, "first_unit": first.unit, "first_subdir": first.subdir}))
"""

GROUP_CHILD = """
import json, sys, time
from types import SimpleNamespace
from pathlib import Path
from tmstarget.config.settings import load_config
from tmstarget.qc.group import unit_group_entries
from tmstarget.report import build_group_report
config = load_config(sys.argv[1])
deriv, space = Path(sys.argv[2]), sys.argv[3]
units = [SimpleNamespace(unit=f"sub-{lb}", subdir=f"sub-{lb}", subject=lb, session=None, runs=[])
         for lb in sys.argv[4].split(",")]
entries = unit_group_entries(deriv, units, config["task"], space, config["denoising"]["strategy"])
t0, c0 = time.perf_counter(), time.process_time()
html = build_group_report(entries, deriv / "group.html", deriv / "group_targets.tsv")
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print("GROUP " + json.dumps({"wall_s": wall, "cpu_s": cpu, "html_bytes": Path(html).stat().st_size}))
"""


def _child_json(text: str, tag: str) -> dict:
    line = next(ln for ln in text.splitlines() if ln.startswith(tag + " "))
    return json.loads(line[len(tag) + 1:])


def _figures(m: dict) -> dict:
    return {k: m[k] for k in ("wall_s", "cpu_s", "load_1min")}


def measure_size(bench: Path, route: str, n: int, log) -> dict:
    """Planning, dry run, one job's parse and group report of the ``route`` cohort of ``n`` subjects."""
    from tmstarget.bids.derivatives import output_path
    from tmstarget.config.settings import load_config

    src = bench / "source" / route
    work, logs = bench / "cohorts" / route / str(n), bench / "logs" / route / str(n)
    shutil.rmtree(work, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    labels = labels_for(n)
    t0 = time.time()
    bids = build_cohort(src / "bids", work / "bids", labels)
    log(f"{route} N={n}: cohort built ({time.time() - t0:.1f} s)")
    config = source_config(bench, route)
    row = {"n": n}
    # planning, in its own empty OUT
    m = measured([sys.executable, "-c", PLAN_CHILD, str(config), str(bids), str(work / "out-plan")],
                 logs / "planning.log")
    plan = _child_json(m["output"], "PLAN")
    if plan["units"] != n:
        raise SystemExit(f"{route} N={n}: make_plan found {plan['units']} units, expected {n}")
    row["planning"] = {"wall_s": round(plan["wall_s"], 2), "cpu_s": round(plan["cpu_s"], 2),
                       "load_1min": m["load_1min"], "process": _figures(m)}
    log(f"{route} N={n}: planning {row['planning']}")
    # the dry run, from an empty OUT
    out = work / "out"
    m = measured(_cli(bids, out, "participant", "--dry-run", "--cores", "2", "--config", config), logs / "dry-run.log")
    row["dry_run"] = {**_figures(m), "output_lines": m["output_lines"]}
    log(f"{route} N={n}: dry run {row['dry_run']}")
    # one job's parse after that dry run
    cfg = load_config(config)
    target = output_path("target_json", out / "tmstarget", subdir=plan["first_subdir"], unit=plan["first_unit"],
                         task=cfg["task"], space=plan["space"])
    m = measured([sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile",
                  str(out / "logs" / "config.dry-run.yaml"), "--directory", str(out), "--cores", "1", "-n", target],
                 logs / "job-parse.log")
    row["job_parse"] = {**_figures(m), "target": Path(target).name}
    log(f"{route} N={n}: one job's parse {row['job_parse']}")
    # the group report on fake per-unit outputs
    deriv = fake_unit_outputs(src / "out" / "tmstarget", work / "group" / "tmstarget", labels)
    m = measured([sys.executable, "-c", GROUP_CHILD, str(config), str(deriv), plan["space"], ",".join(labels)],
                 logs / "group-report.log")
    grp = _child_json(m["output"], "GROUP")
    row["group_report"] = {"wall_s": round(grp["wall_s"], 2), "cpu_s": round(grp["cpu_s"], 2),
                           "html_bytes": grp["html_bytes"], "load_1min": m["load_1min"], "process": _figures(m)}
    log(f"{route} N={n}: group report {row['group_report']}")
    shutil.rmtree(work, ignore_errors=True)   # hard links and small copies, but 1000s of folders
    return row


def run(sizes, routes, command: str, log) -> dict:
    bench = bench_dir()
    bench.mkdir(parents=True, exist_ok=True)
    commit = git_commit()      # before anything runs: the code measured
    result = {"commit": commit, "command": command, "cores": os.cpu_count(), "thresholds": THRESHOLDS,
              "routes": {route: [] for route in routes}, "complete": False}
    path = bench / "cohort.json"
    for route in routes:
        prepare_source(bench, route, log)
    # the floor under one job's parse: starting Python and Snakemake alone
    floor = bench / "logs" / "snakemake-version.log"
    floor.parent.mkdir(parents=True, exist_ok=True)
    result["snakemake_startup"] = _figures(measured([sys.executable, "-m", "snakemake", "--version"], floor))
    log(f"snakemake startup {result['snakemake_startup']}")
    # smallest N of every route first, the JSON rewritten after each: a run cut short keeps what it measured
    for n in sizes:
        for route in routes:
            result["routes"][route].append(measure_size(bench, route, n, log))
            path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    result["complete"] = True
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    log(f"wrote {path}")
    return result


# ----------------------------------------------------------------------------- the page
ROUTE_TITLES = {"raw": "Raw BIDS route (demo subject, built-in preprocessing)",
                "fmriprep": "fMRIPrep route (mini fMRIPrep derivatives tree)"}


def _cell(m: dict | None) -> str:
    if not m:
        return "not measured"
    return f"{fmt(m['wall_s'])} s / {fmt(m['cpu_s'])} CPU-s (load {fmt(m['load_1min'])})"


def _mb(nbytes) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def route_table(rows: list[dict]) -> str:
    head = ["N", "planning", "dry run", "one job's parse", "group report", "group.html", "dry-run output lines"]
    body = [[r["n"], _cell(r.get("planning")), _cell(r.get("dry_run")), _cell(r.get("job_parse")),
             _cell(r.get("group_report")), _mb(r["group_report"]["html_bytes"]) if r.get("group_report") else "n/a",
             r["dry_run"]["output_lines"] if r.get("dry_run") else "n/a"] for r in sorted(rows, key=lambda r: r["n"])]
    return _table(head, body)


def _at(res: dict, route: str, n: int, step: str) -> dict | None:
    return next((r.get(step) for r in res["routes"].get(route, []) if r["n"] == n), None)


def _routes(res: dict) -> list[str]:
    """The routes of ``res`` in the order of :data:`ROUTES` (the raw route first), others after them."""
    return sorted(res["routes"], key=lambda r: (ROUTES.index(r) if r in ROUTES else len(ROUTES), r))


def _verdict(ok) -> str:
    return "not measured" if ok is None else ("yes" if ok else "**no**")


def acceptance_rows(res: dict) -> list[list]:
    """One row per (criterion, route): the threshold, the measured figure, met or not."""
    th = res["thresholds"]
    rows = []
    for route in _routes(res):
        ns = sorted(r["n"] for r in res["routes"][route])
        big = 1000 if 1000 in ns else None

        def one(name, step, key, limit, unit, n=big):
            m = _at(res, route, n, step) if n else None
            val = None if m is None else m[key]
            shown = "n/a" if val is None else (_mb(val) if key == "html_bytes" else f"{fmt(val)} {unit}")
            limit_txt = _mb(limit) if key == "html_bytes" else f"{fmt(limit, 0)} {unit}"
            rows.append([name, route, f"< {limit_txt}", shown, _verdict(None if val is None else val < limit)])

        one("planning, 1000 subjects (make_plan, wall)", "planning", "wall_s", th["planning_wall_s"], "s")
        parses = [_at(res, route, n, "job_parse") for n in ns]
        worst = max((p["wall_s"] for p in parses), default=None)
        rows.append([f"one job's parse, N = {', '.join(map(str, ns))} (largest wall)", route,
                     f"< {fmt(th['job_parse_wall_s'], 0)} s", "n/a" if worst is None else f"{fmt(worst)} s",
                     _verdict(None if worst is None else worst < th["job_parse_wall_s"])])
        if len(ns) >= 2:
            lo, hi = parses[0]["cpu_s"], parses[-1]["cpu_s"]
            ratio = hi / lo if lo > 0 else float("inf")
            rows.append([f"one job's parse flat: CPU at N = {ns[-1]} / CPU at N = {ns[0]}", route,
                         f"< {fmt(th['job_parse_flat_ratio'], 2)}", fmt(ratio, 2),
                         _verdict(ratio < th["job_parse_flat_ratio"])])
        one("dry run, 1000 subjects (wall)", "dry_run", "wall_s", th["dry_run_wall_s"], "s")
        one("group report, 1000 subjects (wall)", "group_report", "wall_s", th["group_report_wall_s"], "s")
        one("group report, 1000 subjects (HTML size)", "group_report", "html_bytes", th["group_report_html_bytes"], "")
        if route == "raw":
            one("dry run, 100 demo subjects (CPU)", "dry_run", "cpu_s", th["dry_run_100_raw_cpu_s"], "CPU-s", n=100)
    return rows


def render(res: dict, date: str) -> str:
    """The page for ``res`` (pure: the same JSON and date give the same bytes)."""
    tables = "\n\n".join(f"## {ROUTE_TITLES.get(route, route)}\n\n{route_table(rows)}"
                         for route, rows in ((r, res["routes"][r]) for r in _routes(res)))
    acceptance = _table(["criterion (issue 23)", "route", "threshold", "measured", "met"], acceptance_rows(res))
    floor = res.get("snakemake_startup")
    startup = (f" For scale: starting Python and Snakemake alone (`python -m snakemake --version`) took "
               f"{_cell(floor)}." if floor else "")
    partial = ("" if res.get("complete", True) else
               "\n**This run did not finish: the tables hold only the sizes it measured before it stopped.**\n")
    return f"""# Cohort benchmark: planning, dry run, one job's parse and group report by cohort size

Generated from the output of `{res['command']}` at commit {res['commit']} on {date}
({res['cores']} cores), rendered by `python benchmarks/cohort.py docs` (`make cohort-docs` runs both from an
empty bench folder). Do not edit by hand; rerun it on the code to be measured.
{partial}
A cohort of N subjects is N hard-linked copies of one subject: `raw` is sub-01 of the demo dataset
(`tmstarget demo-data`), `fmriprep` a mini fMRIPrep derivatives tree (`tests/builders/mini_fmriprep.py`).
Each figure is one fresh process: wall seconds / CPU seconds (the process and its children), with the
1-minute load average of the machine at the end of the measurement (the machine is shared: CPU seconds are
the robust figure).

- planning: the `tmstarget.bids.inputs.make_plan(config)` call (pybids index and header reads), from an
  empty output folder;
- dry run: `tmstarget BIDS OUT participant --dry-run --cores 2` from an empty OUT (its terminal output
  lines in the last column);
- one job's parse: `snakemake --snakefile workflow/Snakefile --configfile OUT/logs/config.dry-run.yaml
  --directory OUT -n <first subject's target JSON>` after that dry run, as each cluster job starts;
- group report: `tmstarget.report.build_group_report` over `tmstarget.qc.group.unit_group_entries` of N
  units whose outputs are copies of the source subject's real ones (the workflow run once on it); the
  HTML size beside it.

{tables}

## Acceptance (issue 23)

"flat": the CPU seconds of one job's parse at the largest N over those at the smallest N. The wall
thresholds are judged on the wall seconds measured here, which include waiting for a CPU at the load shown.{startup}

{acceptance}
"""


def write(res: dict, out: Path) -> Path:
    return write_page(render, res, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "docs"])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help=f"run: cohort sizes (default {SIZES})")
    ap.add_argument("--quick", action="store_true", help=f"run: sizes {QUICK_SIZES}")
    ap.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES), help="run: routes measured")
    ap.add_argument("--out", type=Path, default=OUT_DOC, help="docs: the page written")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "run":
        sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else SIZES))
        command = "python benchmarks/cohort.py run" + (f" --sizes {' '.join(map(str, sizes))}" if args.sizes else
                                                       " --quick" if args.quick else "")
        if list(args.routes) != list(ROUTES):
            command += " --routes " + " ".join(args.routes)
        run(sizes, args.routes, command, log)
    else:
        path = bench_dir() / "cohort.json"
        if not path.exists():
            raise SystemExit(f"{path} not found; run: python benchmarks/cohort.py run")
        write(json.loads(path.read_text()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
