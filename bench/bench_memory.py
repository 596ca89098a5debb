"""Benchmark: memory of a build must stay flat as the input grows (bounded by config).

Builds from 1x, 4x and 16x inputs (the same generated videos under distinct URLs, so every
input is a separate video to the pipeline) on one local Ray, sampling every 0.25 s:
  - the driver's RSS (this process),
  - the largest RSS of any Ray worker process (video tasks, ASR actors),
  - the object store's bytes in use.
Usage: python bench/bench_memory.py --base 3 --factors 1,4,16 --window 8 --out bench_out/memory
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time

import ray

from pipeline import synth
from pipeline.config import load_config
from pipeline.engine import build


def rss(pid) -> int:
    """Resident bytes of a process, from /proc (Linux), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def ray_workers() -> list[int]:
    """Pids of Ray worker processes: their command line starts with 'ray::'."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read(5) == b"ray::":
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.driver = self.worker = self.store = 0

    def run(self):
        while not self.stop.is_set():
            self.driver = max(self.driver, rss(os.getpid()))
            for pid in ray_workers():
                self.worker = max(self.worker, rss(pid))
            total = ray.cluster_resources().get("object_store_memory", 0)
            free = ray.available_resources().get("object_store_memory", total)
            self.store = max(self.store, total - free)
            time.sleep(0.25)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=3, help="videos at 1x")
    ap.add_argument("--factors", default="1,4,16")
    ap.add_argument("--window", type=int, default=8, help="shards.shuffle_window (videos)")
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--out", default="bench_out/memory")
    args = ap.parse_args()
    media = os.path.join(args.out, "media")
    os.makedirs(media, exist_ok=True)
    names = sorted(synth.make_corpus(media, args.base, sentences_per_video=args.sentences))
    base, stop = synth.serve_directory(media)
    cfg = load_config(overrides={"shards.shuffle_window": args.window, "shards.max_samples": 16,
                                 "progress_s": 60})
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    rows = []
    for factor in map(int, args.factors.split(",")):
        urls = os.path.join(args.out, f"urls_{factor}x.txt")
        with open(urls, "w") as f:
            f.write("".join(f"{base}/{n}?copy={c}\n" for c in range(factor) for n in names))
        out = os.path.join(args.out, f"shards_{factor}x")
        shutil.rmtree(out, ignore_errors=True)
        s = Sampler()
        s.start()
        t = time.perf_counter()
        summary = build(urls, out, cfg, log=lambda m: None)
        s.stop.set()
        s.join()
        rows.append({"factor": factor, "videos": factor * len(names), "samples": summary.samples,
                     "wall_s": round(time.perf_counter() - t, 1), "driver_rss_mb": s.driver >> 20,
                     "max_worker_rss_mb": s.worker >> 20, "object_store_peak_mb": int(s.store) >> 20})
        print(json.dumps(rows[-1]), flush=True)
    stop()
    print(f"\n{'input':>6}{'videos':>8}{'samples':>9}{'wall s':>8}{'driver MB':>11}{'worker MB':>11}{'store MB':>10}")
    for r in rows:
        print(f"{r['factor']:>5}x{r['videos']:>8}{r['samples']:>9}{r['wall_s']:>8}{r['driver_rss_mb']:>11}"
              f"{r['max_worker_rss_mb']:>11}{r['object_store_peak_mb']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
