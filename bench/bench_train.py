"""Trainer benchmark: step time with and without tube masking, and the data-wait fraction.

    .venv/bin/python bench/bench_train.py                       # preset small, masks 0 and 0.5
    .venv/bin/python bench/bench_train.py --preset base16 --batch-size 12 --device cuda
    .venv/bin/python bench/bench_train.py --delay 0.5           # a loader 0.5 s late per batch
    .venv/bin/python bench/bench_train.py --shards 'out/shard-*.tar'   # the real loader
    .venv/bin/python bench/bench_train.py --attention joint,divided    # video attention kinds

Each setting runs `--warmup` + `--steps` optimizer steps of pipeline.train.train (one log line
per step) and reports the mean over the last `--steps`: step time, samples/s and the fraction
of the step spent blocked on the next batch. The synthetic source (pipeline.train.synthetic)
makes its batches in the training process, so its cost shows up as data wait too.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from pipeline.train import load_train_config, train
from pipeline.train.data import shard_batches_factory
from pipeline.train.synthetic import factory_for


def run_one(args, mask_ratio: float, delay: float, attention: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        over = {"out": out, "resume": False, "steps": args.warmup + args.steps, "log_every": 1,
                "ckpt_every": 0, "model.video.mask_ratio": mask_ratio, "device": args.device,
                "optim.warmup_steps": 1, "model.video.attention": attention}
        if args.batch_size:
            over["batch_size"] = args.batch_size
        if args.threads:
            over["threads"] = args.threads
        cfg = load_train_config(args.config, over, args.preset)
        if args.shards:
            factory = shard_batches_factory(args.shards, cfg)
        else:
            factory = factory_for(cfg, delay_s=delay)
        lines = []
        t0 = time.perf_counter()
        train(cfg, factory, log=lambda line: lines.append(json.loads(line)))
        wall = time.perf_counter() - t0
    steps = [d for d in lines if d.get("event") == "log"][args.warmup:]
    m = cfg.model
    n = (m.video.image_size // m.video.patch_size) ** 2
    kept = n if mask_ratio == 0 else max(1, round(n * (1 - mask_ratio)))
    step_s = [d["step_time_s"] for d in steps]
    wait = sum(d["data_wait_frac"] * d["step_time_s"] for d in steps)
    return {"attention": attention, "mask_ratio": mask_ratio, "delay_s": delay, "batch_size": cfg.batch_size,
            "video_tokens": 1 + m.units * m.frames_per_unit // m.video.tubelet * kept,
            "step_s_mean": statistics.fmean(step_s), "step_s_median": statistics.median(step_s),
            "samples_per_s": cfg.batch_size * cfg.grad_accum / statistics.fmean(step_s),
            "data_wait_frac": wait / sum(step_s), "wall_s": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="pipeline.train preset (tiny, small, base16)")
    p.add_argument("--config", help="a trainer config file applied after the preset")
    p.add_argument("--batch-size", type=int, default=0, help="0: the preset's")
    p.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--mask-ratios", default="0,0.5", help="comma-separated tube mask ratios")
    p.add_argument("--delay", default="0", help="comma-separated extra seconds per batch (slow loader)")
    p.add_argument("--attention", default="joint", help="comma-separated: joint, divided")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--shards", help="time the real loader (pipeline.loader) on these shards")
    args = p.parse_args(argv)

    rows = [run_one(args, float(r), float(d), a) for a in args.attention.split(",")
            for d in args.delay.split(",") for r in args.mask_ratios.split(",")]
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"preset={args.preset} device={dev} torch_threads={args.threads or torch.get_num_threads()} "
          f"steps={args.steps} (+{args.warmup} warmup)")
    print(f"{'attn':>7} {'mask':>5} {'delay_s':>7} {'tokens':>6} {'step_s':>8} {'median':>8} {'samples/s':>9} {'wait':>6}")
    for r in rows:
        print(f"{r['attention']:>7} {r['mask_ratio']:>5.2f} {r['delay_s']:>7.2f} {r['video_tokens']:>6d} {r['step_s_mean']:>8.3f} "
              f"{r['step_s_median']:>8.3f} {r['samples_per_s']:>9.2f} {r['data_wait_frac']:>6.1%}")
    base = {(r["attention"], r["delay_s"]): r for r in rows if r["mask_ratio"] == 0}
    for r in rows:
        b = base.get((r["attention"], r["delay_s"]))
        if b and r["mask_ratio"] > 0:
            print(f"{r['attention']}: mask {r['mask_ratio']:.2f} vs 0 (delay {r['delay_s']:.2f}s): step time x"
                  f"{r['step_s_mean'] / b['step_s_mean']:.2f}, speed-up x{b['step_s_mean'] / r['step_s_mean']:.2f}")
    print(json.dumps({"bench": "train", "preset": args.preset, "device": dev, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
