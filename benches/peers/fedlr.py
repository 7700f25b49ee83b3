"""Shared arithmetic for the peer benchmarks: Cohort's softmax regression and FedAvg, in numpy.

numpy_fedavg.py and flower_sim.py both import this, so the two peers run the very same maths; only the
orchestration around it differs. It mirrors Cohort (float32 parameters, like Cohort's model crate):
  - features scaled to [-1, 1] by the whole data set's min/max widened by 10% on each side
    (a constant column gets [v - 0.5, v + 0.5]);
  - logits = x @ W + b, W 64x10, b 10, mean softmax cross-entropy;
    initial W ~ U(+-sqrt(6 / (64 + 10))), b = 0, drawn once;
  - one epoch of minibatch SGD per round (lr 0.5, batch 32, fresh shuffle, last batch may be smaller);
  - the update (local - global) clipped to L2 norm 10, averaged weighted by train rows.
"""

import csv
import functools
import json

import numpy as np

LR, BATCH, CLIP = 0.5, 32, 10.0
DTYPE = np.float32


@functools.lru_cache(maxsize=None)  # once per process (every Ray worker loads its own copy)
def load(data_path, partition_path):
    """Scaled features X, labels y and the list of clients ({"train": [...], "holdout": [...]})."""
    with open(data_path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], np.array(rows[1:], dtype=np.float64)
    label = header.index("digit")
    x = np.delete(body, label, axis=1)
    y = body[:, label].astype(np.int64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo)
    lo, hi = np.where(hi > lo, lo - pad, lo - 0.5), np.where(hi > lo, hi + pad, hi + 0.5)
    x = ((x - (lo + hi) / 2) / ((hi - lo) / 2)).astype(DTYPE)
    with open(partition_path) as f:
        clients = json.load(f)
    return x, y, clients


def init_model(seed, n_in=64, n_out=10):
    limit = np.sqrt(6.0 / (n_in + n_out))
    w = np.random.default_rng(seed).uniform(-limit, limit, (n_in, n_out)).astype(DTYPE)
    return [w, np.zeros(n_out, DTYPE)]


def local_update(model, x, y, rng):
    """One epoch of minibatch SGD from `model`; returns the clipped delta (local - global)."""
    w, b = model[0].copy(), model[1].copy()
    order = rng.permutation(len(y))
    for start in range(0, len(y), BATCH):
        idx = order[start:start + BATCH]
        xb, yb = x[idx], y[idx]
        z = xb @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1.0           # d(mean CE)/dz, times batch size
        p /= len(yb)
        w -= LR * (xb.T @ p)
        b -= LR * p.sum(axis=0)
    delta = [w - model[0], b - model[1]]
    norm = np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in delta))
    if norm > CLIP:
        delta = [d * DTYPE(CLIP / norm) for d in delta]
    return delta


def correct(model, x, y):
    """Number of rows whose argmax prediction equals the label."""
    return int(np.sum(np.argmax(x @ model[0] + model[1], axis=1) == y)) if len(y) else 0


def client_rng(seed, rnd, client):
    """The shuffle stream of one client in one round (independent of which process runs it)."""
    return np.random.default_rng([seed, rnd, client])
