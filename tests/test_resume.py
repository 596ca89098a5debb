"""A crashed build never leaves a bad shard, and a rerun finishes with identical output.

The build driver runs as a subprocess joined to the test's Ray instance and is killed with
SIGKILL at random moments; after every kill each shard under a final name must be a
complete tar, and the final rerun must produce byte-identical shards and the same manifest
as an uninterrupted run with the same seed, redoing at most the videos that were in flight.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.engine import build

CONFIG = {"segment.min_unit_s": 2.0, "shards.max_samples": 2, "shards.shuffle_window": 2,
          "asr.actors": 1, "max_inflight": 2, "progress_s": 60}


def cli_flags(cfg: dict) -> list[str]:
    return [x for k, v in cfg.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def shards_of(out):
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".tar")}


def assert_complete_tars(out):
    for name in os.listdir(out):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(out, name)) as tar:       # reads every header
                for m in tar.getmembers():
                    assert len(tar.extractfile(m).read()) == m.size


@pytest.fixture(scope="module")
def urls(tmp_path_factory, corpus, server):
    d = tmp_path_factory.mktemp("resume")
    lines = [f"{server.url}/media/video_{i:03d}.mp4" for i in range(4)] + [f"{server.url}/404"]
    (d / "urls.txt").write_text("\n".join(lines) + "\n")
    return str(d / "urls.txt")


def test_sigkilled_builds_resume_to_identical_shards(urls, tmp_path, ray_local):
    import ray
    ref = str(tmp_path / "ref")
    build(urls, ref, load_config(overrides=CONFIG))
    reference = shards_of(ref)
    assert len(reference) >= 4

    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "pipeline", "build", "--urls", urls, "--out", out,
           "--address", ray.get_runtime_context().gcs_address, *cli_flags(CONFIG)]
    rng = random.Random(1)
    kills = early = 0
    while kills < 3 and early < 6:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, max(1.5, 12.0 / 2 ** early)))
        if p.poll() is not None:          # finished before its kill: start over, kill sooner
            early += 1
            shutil.rmtree(out)
            continue
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        if os.path.isdir(out):
            assert_complete_tars(out)
    assert kills == 3
    journaled = len([f for _, _, fs in os.walk(os.path.join(out, "_state", "videos")) for f in fs
                     if f.endswith(".json")])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    assert shards_of(out) == reference
    got = pq.read_table(os.path.join(out, "manifest")).sort_by("key").to_pylist()
    assert got == pq.read_table(os.path.join(ref, "manifest")).sort_by("key").to_pylist()
    assert summary["videos_ok"] == 4 and summary["failed_by_reason"] == {"http_4xx": 1}
    # finished work is never redone: the last run processed exactly the unjournaled videos
    # (a kill loses at most the max_inflight videos in flight)
    assert summary["processed_videos"] == 5 - journaled
