"""Generation time of the synthetic phantom: this checkout against an earlier generator, side by side.

    python -m benchmarks synthetic                      # the 40 default cases, vs the generator before v2
    python -m benchmarks synthetic --baseline main~3    # vs any git revision
    python -m benchmarks synthetic --quick              # 4 small cases: checks that the benchmark runs

Both generators run in their own worker process (the baseline from `git archive <revision> lits` in a temporary
folder), and the cases alternate between them (old, new, new, old, ...) so that whatever else the machine does
weighs on both alike. Each case is generated and written (two gzip level-1 NIfTI files, one after the other),
timed inside its worker; then each worker runs `generate_dataset` of all the cases twice (old, new, new, old), which
is what a first run waits for (the new one writes in the background). Printed: per-case times, totals and the
ratios new / old. Only ratios mean anything on a shared machine: run it on a quiet one for absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.probes import REPO, machine_line

WORKER = r"""
import json, shutil, sys, tempfile, time
from pathlib import Path
from lits.data.synthetic import SyntheticParams, case_filenames, generate_case, generate_dataset
from lits.data.synthetic import dataset as ds
params = SyntheticParams(**json.loads(sys.argv[1]))
out = Path(tempfile.mkdtemp())
print("ready", flush=True)
for line in sys.stdin:
    what, n = line.split()
    t0 = time.perf_counter()
    if what == "dataset":  # what a first run waits for: generate_dataset of cases 0..n-1
        generate_dataset(out / "set", int(n), 0, params, progress=False)
        shutil.rmtree(out / "set")
        print(json.dumps({"total": time.perf_counter() - t0}), flush=True)
        continue
    i = int(n)
    vol, seg, aff = generate_case(i, 0, params)
    t1 = time.perf_counter()
    vname, sname = case_filenames(i)
    ds._save_nifti(ds._nifti(vol, aff, "bench"), out / vname)
    ds._save_nifti(ds._nifti(seg, aff, "bench"), out / sname)
    t2 = time.perf_counter()
    print(json.dumps({"generate": t1 - t0, "total": t2 - t0, "tumour_voxels": int((seg == 2).sum())}), flush=True)
shutil.rmtree(out)
"""


def first_v2_parent() -> str:
    """The revision just before the generator became version 2 (the commit that introduced GENERATOR_VERSION)."""
    log = subprocess.run(
        ["git", "-C", str(REPO), "log", "--format=%H", "-S", "GENERATOR_VERSION", "--", "lits/data/synthetic"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not log:
        sys.exit("error: no commit introduces GENERATOR_VERSION here; give --baseline REVISION")
    return log[-1] + "^"


def checkout(revision: str, into: Path) -> Path:
    """`lits/` of ``revision`` extracted into ``into``; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "lits"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def start(pythonpath: Path, params: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(params)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    if proc.stdout.readline().strip() != "ready":
        sys.exit(f"error: the worker for {pythonpath} did not start")
    return proc


def ask(proc: subprocess.Popen, what: str, n: int) -> dict:
    proc.stdin.write(f"{what} {n}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default=None, help="git revision of the old generator (default: before v2)")
    p.add_argument("--cases", type=int, default=40, help="cases 0..N-1 (default 40, the default data set)")
    p.add_argument("--quick", action="store_true", help="4 cases of size 96: checks that the benchmark runs")
    p.add_argument("--no-datasets", dest="datasets", action="store_false", help="skip the generate_dataset runs")


def time_cases(old, new, cases: int, datasets: bool) -> tuple[dict, dict]:
    """Per-case times of both workers, alternating, then (`datasets`) generate_dataset twice each."""
    times = {"old": [], "new": []}
    for i in range(cases):
        order = [("old", old), ("new", new)] if i % 2 == 0 else [("new", new), ("old", old)]
        for name, proc in order:
            times[name].append(ask(proc, "case", i))
        o, n = times["old"][-1], times["new"][-1]
        voxels = f"tumour voxels {o['tumour_voxels']} -> {n['tumour_voxels']}"
        print(f"case {i:3d}: old {o['total']:.2f} s, new {n['total']:.2f} s ({voxels})", flush=True)
    whole = {"old": [], "new": []}
    for name, proc in [("old", old), ("new", new), ("new", new), ("old", old)][: 4 if datasets else 0]:
        whole[name].append(ask(proc, "dataset", cases)["total"])
        print(f"generate_dataset of {cases} cases, {name}: {whole[name][-1]:.1f} s", flush=True)
    return times, whole


def main(args) -> int:
    params = {"size": 96, "num_slices": [20, 28]} if args.quick else {}
    cases = 4 if args.quick else args.cases
    baseline = args.baseline or first_v2_parent()
    with tempfile.TemporaryDirectory() as tmp:
        old, new = start(checkout(baseline, Path(tmp)), params), start(REPO, params)
        times, whole = time_cases(old, new, cases, args.datasets)
        for proc in (old, new):
            proc.stdin.close()
            proc.wait()
    for key in ("generate", "total"):
        t_old = sum(t[key] for t in times["old"])
        t_new = sum(t[key] for t in times["new"])
        per_case = statistics.median(n[key] / o[key] for o, n in zip(times["old"], times["new"]))
        what = "generation only" if key == "generate" else "generation + NIfTI writing"
        print(f"{what}: old {t_old:.1f} s, new {t_new:.1f} s for {cases} cases; ratio new/old {t_new / t_old:.2f} "
              f"(median per case {per_case:.2f})")  # fmt: skip
    if whole["old"]:
        t_old, t_new = sum(whole["old"]), sum(whole["new"])
        print(
            f"generate_dataset, two runs each: old {t_old:.1f} s, new {t_new:.1f} s; ratio new/old {t_new / t_old:.2f}"
        )
    print(f"baseline: {baseline}\n{machine_line()}")
    return 0
