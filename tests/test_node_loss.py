"""Losing a worker node mid-build loses no video: Ray retries its tasks and restarts its actors."""
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq


def test_build_survives_the_loss_of_a_worker_node(corpus, server, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(4)))
    out = tmp_path / "out"
    script = os.path.join(os.path.dirname(__file__), "nodeloss_run.py")
    p = subprocess.Popen([sys.executable, script, str(urls), str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    try:
        stdout, stderr = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
    assert p.returncode == 0, stderr[-4000:]
    summary = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    assert (summary["alive_before"], summary["alive_after"]) == (2, 1)
    assert summary["videos_ok"] == 4 and summary["videos_failed"] == 0
    assert summary["samples"] == 12
    keys = pq.read_table(out / "manifest").column("key").to_pylist()
    assert sorted(keys) == sorted(f"{v}_{i:04d}" for v in summary_ids(out) for i in range(3))


def summary_ids(out):
    return {os.path.splitext(f)[0] for _, _, fs in os.walk(out / "_state" / "videos") for f in fs}
