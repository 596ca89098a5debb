"""`train --shards URL_OR_GLOB | --synthetic [--config FILE] [--steps N] [--out DIR] [--preset tiny]`

Progress lines (JSON) go to stderr; the final metrics are one JSON line on stdout: loss,
exact_acc (all K transcripts placed right), position_acc (and by position), samples_per_s,
data_wait_frac, step. Every config field is also a flag (`--model.video.width 384`); flags beat
the config file, which beats the preset. A rerun with the same --out resumes.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.config import add_config_flags, overrides_from_args
from pipeline.train.config import PRESETS, TrainConfig, load_train_config

FINAL_KEYS = ("loss", "sort_loss", "contrastive_loss", "exact_acc", "position_acc", "position_acc_by_pos",
              "samples_per_s", "data_wait_frac", "step", "steps_run")


def build_parser(prog: str = "python -m pipeline.train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_arguments(parser)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` arguments, for a subcommand of `python -m pipeline` as well."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="WebDataset shards: a URL, a glob or a brace pattern (needs pipeline.loader)")
    src.add_argument("--synthetic", action="store_true",
                     help="train on the built-in synthetic colour-sorting data (a smoke test)")
    parser.add_argument("--config", help="YAML or JSON config file (sections as the flags below)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="model/optimiser preset applied first")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="run under Ray Train on this many workers (0: in this process, no Ray)")
    parser.add_argument("--gpu", action="store_true", help="with --ray-workers: one GPU per worker")
    parser.add_argument("--address", help="with --ray-workers: Ray cluster address (default: a local Ray)")
    add_config_flags(parser, TrainConfig())


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        cfg = load_train_config(args.config, overrides_from_args(args), args.preset)
    except (ValueError, OSError) as e:
        parser.error(f"bad config: {e}")
    if args.synthetic:
        from pipeline.train.synthetic import factory_for
        factory = factory_for(cfg)
    else:
        from pipeline.train.data import shard_batches_factory
        factory = shard_batches_factory(args.shards, cfg)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from pipeline.train.loop import DataError
    try:
        if args.ray_workers > 0:
            import ray
            from pipeline.train.ray_train import train_ray
            if args.address:
                ray.init(address=args.address)
            final = train_ray(cfg, factory, num_workers=args.ray_workers, use_gpu=args.gpu)
        else:
            from pipeline.train.loop import train
            final = train(cfg, factory, log=log)
    except DataError as e:                 # no data, no loader: the user's to fix, no traceback
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: final[k] for k in FINAL_KEYS if k in final}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """argv: the arguments after `train` (a leading "train" is accepted too)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        argv = argv[1:]
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
