"""Losing a worker node mid-build loses no video: Ray retries its tasks and restarts its actors,
the engine shrinks the ASR pool so that the survivor can still run video tasks, and grows it
back when a node joins again."""
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq

from pipeline.config import load_config
from pipeline.engine import asr_pool_target


def test_build_survives_the_loss_of_a_worker_node_and_regrows_when_one_joins(corpus, server, tmp_path):
    urls = tmp_path / "urls.txt"         # nodeloss_run adds a 4th video, held until the pool regrew
    urls.write_text("".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(3)))
    out = tmp_path / "out"
    script = os.path.join(os.path.dirname(__file__), "nodeloss_run.py")
    p = subprocess.Popen([sys.executable, script, str(urls), str(out), str(corpus[0])], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    try:
        stdout, stderr = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
    assert p.returncode == 0, stderr[-4000:]
    summary = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    assert (summary["alive_before"], summary["alive_lost"], summary["alive_after"]) == (2, 1, 2)
    assert summary["pool_log"] == ["[build] cluster shrank: 1 ASR actor(s) left",
                                   "[build] cluster grew: 2 ASR actor(s)"]
    assert summary["videos_ok"] == 4 and summary["videos_failed"] == 0
    assert summary["samples"] == 12
    keys = pq.read_table(out / "manifest").column("key").to_pylist()
    assert sorted(keys) == sorted(f"{v}_{i:04d}" for v in summary_ids(out) for i in range(3))


def summary_ids(out):
    return {os.path.splitext(f)[0] for _, _, fs in os.walk(out / "_state" / "videos") for f in fs}


def test_asr_pool_target_shrinks_to_fit_and_grows_back_to_the_configured_size():
    fixed = load_config(overrides={"asr.actors": 2})                  # 1 CPU per actor and per task
    assert asr_pool_target(0, fixed, {"CPU": 4.0}, 0.0) == 2           # the start
    assert asr_pool_target(2, fixed, {"CPU": 2.0}, 0.0) == 1           # a node left: room for a task
    assert asr_pool_target(1, fixed, {"CPU": 2.0}, 0.0) == 1
    assert asr_pool_target(1, fixed, {"CPU": 4.0}, 0.0) == 2           # it came back
    assert asr_pool_target(1, fixed, {"CPU": 64.0}, 0.0) == 2          # never past asr.actors
    assert asr_pool_target(2, fixed, {"CPU": 1.0}, 0.0) == 1           # always one actor
    halves = load_config(overrides={"asr.actors": 2, "task_cpus": 0.5})   # what nodeloss_run uses
    assert [asr_pool_target(2, halves, {"CPU": c}, 0.0) for c in (2.0, 4.0)] == [1, 2]

    gpus = load_config(overrides={"asr.num_gpus": 1.0})                # one actor per GPU
    assert asr_pool_target(0, gpus, {"CPU": 32.0, "GPU": 2.0}, 1.0) == 2
    assert asr_pool_target(2, gpus, {"CPU": 64.0, "GPU": 4.0}, 1.0) == 4   # the autoscaler added GPUs
    assert asr_pool_target(4, gpus, {"CPU": 32.0, "GPU": 2.0}, 1.0) == 2   # and took them away
    cpus = load_config()                                               # one actor per 4 CPUs
    assert asr_pool_target(3, cpus, {"CPU": 8.0}, 0.0) == 3            # fits: kept, not cut to 2
    assert asr_pool_target(1, cpus, {"CPU": 16.0}, 0.0) == 4
