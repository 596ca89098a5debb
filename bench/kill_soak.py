"""Soak: SIGKILL the build driver at N random moments, then finish; compare with a clean run.

Checks after every kill that each shard under a final name is a complete tar, and at the end
that the shards are byte-identical to an uninterrupted build with the same seed. Prints, per
run, how many videos were journaled when it died and how many the next run had to redo.
Usage: python bench/kill_soak.py --kills 20 --videos 6 --out bench_out/soak
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import ray

from pipeline import synth
from pipeline.config import load_config
from pipeline.engine import build
from pipeline.shards import read_shard

CONFIG = {"segment.min_unit_s": 2.0, "shards.max_samples": 2, "shards.shuffle_window": 2,
          "asr.actors": 1, "max_inflight": 2, "progress_s": 600}


def shards(out: str) -> dict[str, bytes]:
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".tar")}


def journaled(out: str) -> int:
    return sum(f.endswith(".json") for _, _, fs in os.walk(os.path.join(out, "_state", "videos")) for f in fs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--out", default="bench_out/soak")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    media = os.path.join(args.out, "media")
    names = sorted(synth.make_corpus(media, args.videos, sentences_per_video=8))
    base, stop = synth.serve_directory(media)
    urls = os.path.join(args.out, "urls.txt")
    with open(urls, "w") as f:
        f.write("".join(f"{base}/{n}\n" for n in names))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    t = time.perf_counter()
    build(urls, os.path.join(args.out, "ref"), load_config(overrides=CONFIG), log=lambda m: None)
    clean_s = time.perf_counter() - t
    reference = shards(os.path.join(args.out, "ref"))

    out = os.path.join(args.out, "killed")
    cmd = [sys.executable, "-m", "pipeline", "build", "--urls", urls, "--out", out, "--address",
           ray.get_runtime_context().gcs_address] + [x for k, v in CONFIG.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    rng = random.Random(args.seed)
    kills = 0
    while kills < args.kills:
        before = journaled(out) if os.path.isdir(out) else 0
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, clean_s))
        if p.poll() is not None:           # finished before the kill: start over from scratch
            shutil.rmtree(out)
            continue
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        for name in os.listdir(out):
            if name.endswith(".tar"):
                read_shard(os.path.join(out, name))       # raises on a partial or bad tar
        print(json.dumps({"kill": kills, "journaled_before": before, "journaled_after": journaled(out)}), flush=True)
    left = len(names) - journaled(out)
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(p.stdout)
    stop()
    same = shards(out) == reference
    print(json.dumps({"kills": kills, "identical_to_clean_run": same, "videos": len(names),
                      "unjournaled_before_last_run": left, "processed_by_last_run": summary["processed_videos"],
                      "clean_run_s": round(clean_s, 1)}))
    return 0 if same and summary["processed_videos"] == left else 1


if __name__ == "__main__":
    sys.exit(main())
