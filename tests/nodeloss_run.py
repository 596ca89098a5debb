"""Run by test_node_loss: a 2-node Ray cluster on this machine loses its worker mid-build.

Usage: python tests/nodeloss_run.py URLS OUT ; prints the summary as JSON.
"""
import dataclasses
import glob
import json
import os
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster

from pipeline.config import load_config
from pipeline.engine import build


def main(urls: str, out: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="WARNING")
    cfg = load_config(overrides={"segment.min_unit_s": 2.0, "shards.max_samples": 2, "asr.actors": 2, "progress_s": 3})
    result = {}
    t = threading.Thread(target=lambda: result.update(summary=build(urls, out, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))))
    t.start()
    deadline = time.time() + 300
    while not glob.glob(os.path.join(out, "_state", "videos", "*", "*.json")) and time.time() < deadline:
        time.sleep(0.2)
    alive_before = len([n for n in ray.nodes() if n["Alive"]])
    cluster.remove_node(worker)          # the worker node dies while videos are in flight
    t.join(timeout=600)
    summary = dataclasses.asdict(result["summary"])
    summary["alive_before"] = alive_before
    summary["alive_after"] = len([n for n in ray.nodes() if n["Alive"]])
    print(json.dumps(summary))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
