#!/usr/bin/env python3
"""The same FedAvg run on Flower's simulation engine (flwr.simulation.run_simulation, Ray backend).

  python flower_sim.py --partition OUT/partition.json --data examples/data/digits.csv --rounds 20

Message API of flwr >= 1.21: a ServerApp whose main runs the stock flwr.serverapp.strategy.FedAvg,
and a ClientApp with train/evaluate handlers; one virtual SuperNode per client of Cohort's partition
(partition-id i = the i-th entry of partition.json). Each client returns global + clipped delta, so
FedAvg's weighted average of the returned models (weight = train rows) equals Cohort's
global += sum(n_i * delta_i) / sum(n_i). Every round ends with a federated evaluation on all clients,
weighted by holdout rows, i.e. pooled accuracy; the last round's is reported.

Prints one JSON line (the last line of stdout): accuracy, wall_seconds (run_simulation's whole call,
Ray start-up included), flwr and ray versions.
"""

import argparse
import json
import logging
import os
import sys
import time

import flwr
import ray
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from ray import cloudpickle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlr  # noqa: E402

cloudpickle.register_pickle_by_value(fedlr)  # ship the shared maths to the Ray workers with the app


def make_client_app(data, partition, seed):
    app = ClientApp()

    def client_data(context, key):
        x, y, clients = fedlr.load(data, partition)
        cid = int(context.node_config["partition-id"])
        rows = clients[cid][key]
        return cid, x[rows], y[rows]

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cid, x, y = client_data(context, "train")
        model = msg.content["arrays"].to_numpy_ndarrays()
        rnd = int(msg.content["config"]["server-round"])
        delta = fedlr.local_update(model, x, y, fedlr.client_rng(seed, rnd, cid))
        local = [p + d for p, d in zip(model, delta)]
        reply = RecordDict({"arrays": ArrayRecord(local),
                            "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content=reply, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _, x, y = client_data(context, "holdout")
        model = msg.content["arrays"].to_numpy_ndarrays()
        acc = fedlr.correct(model, x, y) / len(y) if len(y) else 0.0
        reply = RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": len(y)})})
        return Message(content=reply, reply_to=msg)

    return app


def make_server_app(n_clients, rounds, seed, out):
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n_clients,
                          min_evaluate_nodes=n_clients, min_available_nodes=n_clients)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(fedlr.init_model(seed)),
                                num_rounds=rounds, train_config=ConfigRecord())
        out["accuracy"] = float(result.evaluate_metrics_clientapp[rounds]["accuracy"])

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partition", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray")
    args = ap.parse_args()
    n_clients = len(fedlr.load(args.data, args.partition)[2])

    out = {}
    t0 = time.perf_counter()
    run_simulation(
        server_app=make_server_app(n_clients, args.rounds, args.seed, out),
        client_app=make_client_app(args.data, args.partition, args.seed),
        num_supernodes=n_clients,
        # One CPU per ClientApp: as many clients in parallel as the machine has cores.
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": args.cpus, "logging_level": logging.ERROR}},
    )
    wall = time.perf_counter() - t0
    print(json.dumps({"impl": "flower", "accuracy": out.get("accuracy"), "rounds": args.rounds,
                      "clients": n_clients, "wall_seconds": wall, "flwr": flwr.__version__,
                      "ray": ray.__version__}))


if __name__ == "__main__":
    main()
