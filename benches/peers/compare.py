#!/usr/bin/env python3
"""Cohort vs a numpy loop vs Flower's simulation engine: one FedAvg run each, one after the other.

  python compare.py [--cohort-bin PATH] [--rounds 20] [--workdir DIR]

Cohort runs first and writes partition.json; numpy_fedavg.py and flower_sim.py then train on those very
train/holdout indices. Every run is measured the same way: wall time from spawn to exit, and the memory
of its whole process tree (the process and all its descendants, e.g. Ray's GCS, raylet and workers),
sampled every 50 ms with psutil. Peak RSS sums every process's resident set (pages shared between
processes count once per process); peak PSS splits shared pages between the processes that map them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def tree_memory(root):
    """(RSS sum, PSS sum, process count) over `root` and its live descendants, in bytes."""
    rss = pss = n = 0
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for p in procs:
        try:
            mem = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, n = rss + mem.rss, pss + getattr(mem, "pss", mem.rss), n + 1
    return rss, pss, n


def measure(name, cmd, log_dir):
    """Run `cmd`; return its last stdout JSON line plus wall time and peak tree memory."""
    with open(os.path.join(log_dir, name + ".log"), "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        root = psutil.Process(proc.pid)
        peak_rss = peak_pss = peak_n = 0
        while proc.poll() is None:
            rss, pss, n = tree_memory(root)
            peak_rss, peak_pss, peak_n = max(peak_rss, rss), max(peak_pss, pss), max(peak_n, n)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        out = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}); see {err.name}")
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return {"name": name, "wall": wall, "inner": result.get("wall_seconds"), "rss": peak_rss / 2**20,
            "pss": peak_pss / 2**20, "procs": peak_n, "accuracy": result["accuracy"], "json": result}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort-bin", default=os.environ.get("COHORT_BIN", "/tmp/cohort-peer-bin"))
    ap.add_argument("--data", default=os.path.join(REPO, "examples/data/digits.csv"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--workdir", default=None, help="where Cohort's output and the logs go")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="cohort-peers-")
    os.makedirs(work, exist_ok=True)
    out_dir = os.path.join(work, "cohort")
    partition = os.path.join(out_dir, "partition.json")
    common = ["--partition", partition, "--data", args.data, "--rounds", str(args.rounds)]

    runs = [
        measure("cohort", [args.cohort_bin, "-q", "simulate", "--dataset", "digits", "--clients", "100",
                           "--rounds", str(args.rounds), "--partition", "dirichlet:0.5", "--no-dp",
                           "--seed", "7", "--out", out_dir, "--json"], work),
        measure("numpy", [sys.executable, os.path.join(HERE, "numpy_fedavg.py")] + common, work),
        measure("flower", [sys.executable, os.path.join(HERE, "flower_sim.py")] + common, work),
    ]

    print(f"{'impl':8} {'wall s':>8} {'inner s':>8} {'peak RSS MB':>12} {'peak PSS MB':>12} "
          f"{'procs':>6} {'accuracy':>9}")
    for r in runs:
        print(f"{r['name']:8} {r['wall']:8.2f} {r['inner']:8.2f} {r['rss']:12.1f} {r['pss']:12.1f} "
              f"{r['procs']:6d} {r['accuracy']:9.4f}")
    c, n, f = runs
    print(f"\nflower time / cohort time   {f['wall'] / c['wall']:7.2f}x")
    print(f"numpy time / cohort time    {n['wall'] / c['wall']:7.2f}x")
    print(f"cohort memory / flower mem  {c['rss'] / f['rss']:7.3f} (RSS), {c['pss'] / f['pss']:.3f} (PSS)")
    print(f"flwr {f['json'].get('flwr')}, ray {f['json'].get('ray')}; logs and Cohort output in {work}")
    spread = max(r["accuracy"] for r in runs) - min(r["accuracy"] for r in runs)
    if spread > 0.02:
        sys.exit(f"accuracies differ by {spread:.4f} > 0.02")


if __name__ == "__main__":
    main()
