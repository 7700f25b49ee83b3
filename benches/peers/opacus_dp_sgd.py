#!/usr/bin/env python3
"""Opacus DP-SGD against plain PyTorch SGD on the shapes of Cohort's `cargo bench -p cohort-benches --bench dp_sgd`.

Run:  python3 -m venv /tmp/opacus && /tmp/opacus/bin/pip install opacus==1.6.0 torch
      /tmp/opacus/bin/python benches/peers/opacus_dp_sgd.py [--runs 5] [--modes ghost,hooks]

CI does not run this. It mirrors benches/benches/dp_sgd.rs:
- shapes 30-2 with B = 32 (the demo's logistic regression), 30-64-64-2 with B = 64 and 784-256-10 with B = 256,
  ReLU between layers, softmax cross-entropy;
- n = 100 B random records, Poisson sampling at q = 1/100 (expected batch B), sigma = 1, C = 1, lr = 0.01;
- one "run" is 100 steps: DP-SGD through `PrivacyEngine.make_private(poisson_sampling=True)`, plain SGD one
  epoch of shuffled batches of B through the same kind of DataLoader;
- 2 threads (`torch.set_num_threads(2)`), CPU.

It prints, per shape and per Opacus grad-sample mode, two ratios DP-SGD / SGD, as the Rust bench does:
- "interleaved": DP and SGD runs alternate, so drift on a shared machine affects both alike;
- "separate": all DP runs, then all SGD runs (the way criterion measures them, one after the other).

Opacus' `secure_mode` needs torchcsprng, which has no wheel for current torch, so Opacus here uses torch's
default (non-cryptographic) generator for its noise: a cost Cohort pays (AES-256-CTR, four draws per value)
and this peer does not.
"""

import argparse
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SHAPES = [("30-2_b32", [30, 2], 32), ("30-64-64-2_b64", [30, 64, 64, 2], 64), ("784-256-10_b256", [784, 256, 10], 256)]
STEPS = 100


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def data(sizes, batch):
    g = torch.Generator().manual_seed(7)
    n = batch * STEPS
    x = torch.rand(n, sizes[0], generator=g) * 2 - 1
    y = torch.arange(n) % sizes[-1]
    return TensorDataset(x, y)


def sgd_run(sizes, batch, dataset):
    torch.manual_seed(3)
    model = mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loader = DataLoader(dataset, batch_size=batch, shuffle=True)
    steps = 0
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        steps += 1
    assert steps == STEPS, steps


def dp_run(sizes, batch, dataset, mode):
    from opacus import PrivacyEngine

    torch.manual_seed(3)
    model = mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loader = DataLoader(dataset, batch_size=batch)
    engine = PrivacyEngine()
    kwargs = dict(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                  poisson_sampling=True, grad_sample_mode=mode, loss_reduction="sum")
    if mode == "ghost":
        model, opt, loss_fn, loader = engine.make_private(criterion=loss_fn, **kwargs)
    else:
        model, opt, loader = engine.make_private(**kwargs)
    steps = 0
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        steps += 1
    assert steps == STEPS, steps


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of 100 steps per loop and measurement")
    parser.add_argument("--modes", default="ghost,hooks", help="Opacus grad_sample_mode values")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import opacus

    print(f"torch {torch.__version__}, opacus {opacus.__version__}, {torch.get_num_threads()} threads")
    for label, sizes, batch in SHAPES:
        dataset = data(sizes, batch)
        for mode in args.modes.split(","):
            dp_run(sizes, batch, dataset, mode)  # warm-up
            sgd_run(sizes, batch, dataset)
            dp_i = sgd_i = 0.0
            for _ in range(args.runs):
                dp_i += timed(lambda: dp_run(sizes, batch, dataset, mode))
                sgd_i += timed(lambda: sgd_run(sizes, batch, dataset))
            dp_s = sum(timed(lambda: dp_run(sizes, batch, dataset, mode)) for _ in range(args.runs))
            sgd_s = sum(timed(lambda: sgd_run(sizes, batch, dataset)) for _ in range(args.runs))
            per_s = lambda t: args.runs * STEPS / t  # noqa: E731
            print(
                f"{label} opacus-{mode}: interleaved DP-SGD {per_s(dp_i):.0f} steps/s, SGD {per_s(sgd_i):.0f} steps/s,"
                f" DP-SGD / SGD = {dp_i / sgd_i:.2f}x; separate {dp_s / args.runs * 1e3:.1f} vs"
                f" {sgd_s / args.runs * 1e3:.1f} ms per 100 steps = {dp_s / sgd_s:.2f}x ({args.runs} runs of {STEPS} steps)",
                flush=True,
            )


if __name__ == "__main__":
    main()
