#!/usr/bin/env python3
"""FedAvg of softmax regression as a plain single-process numpy loop, on Cohort's own partition.

  python numpy_fedavg.py --partition OUT/partition.json --data examples/data/digits.csv --rounds 20

Prints one JSON line: accuracy (final global model, pooled over every client's holdout rows) and
wall_seconds (load + train + evaluate, interpreter start-up excluded). Like Cohort it evaluates the
global model on every client's holdout rows after each round.
"""

import argparse
import json
import time

import numpy as np

import fedlr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partition", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    t0 = time.perf_counter()
    x, y, clients = fedlr.load(args.data, args.partition)
    model = fedlr.init_model(args.seed)
    for rnd in range(1, args.rounds + 1):
        total = [np.zeros_like(p) for p in model]
        rows = 0
        for cid, c in enumerate(clients):
            tr = c["train"]
            delta = fedlr.local_update(model, x[tr], y[tr], fedlr.client_rng(args.seed, rnd, cid))
            total = [t + len(tr) * d for t, d in zip(total, delta)]
            rows += len(tr)
        model = [p + t / fedlr.DTYPE(rows) for p, t in zip(model, total)]
        hits = sum(fedlr.correct(model, x[c["holdout"]], y[c["holdout"]]) for c in clients)
        accuracy = hits / sum(len(c["holdout"]) for c in clients)
    print(json.dumps({"impl": "numpy", "accuracy": accuracy, "rounds": args.rounds,
                      "clients": len(clients), "wall_seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
