"""Command line: `python -m pipeline build ...` (shards) and `python -m pipeline train ...`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from pipeline.config import add_config_flags, load_config, overrides_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build shuffled WebDataset shards from a URL list",
                       description="Download, transcribe, segment and clip every video of a URL "
                       "list and write globally shuffled WebDataset shards, a Parquet manifest, "
                       "errors.parquet and summary.json into --out. Every config option can be "
                       "given in --config (YAML/JSON, sections as below) or as a flag; flags win. "
                       "A rerun with the same --out resumes where the last run stopped.")
    b.add_argument("--urls", required=True, help="URL list: .txt, .csv, .tsv, .jsonl or .parquet with a 'url' column")
    b.add_argument("--out", required=True, help="output directory (shards, manifest/, errors.parquet, summary.json)")
    b.add_argument("--config", help="YAML or JSON config file")
    b.add_argument("--address", help="Ray cluster address to join (default: start a local Ray)")
    b.add_argument("--retry-errors", action="store_true",
                   help="rerun only inputs that failed with a retryable reason (timeouts, 5xx, "
                   "connection errors); their samples go into new shards, nothing else is touched")
    add_config_flags(b)
    from pipeline.train.cli import add_train_arguments
    t = sub.add_parser("train", help="train the TVTSv2 transcript-sorting model on shards",
                       description="Stream shards (local, http or s3://), train, and print one JSON "
                       "line of final metrics. A rerun with the same --out resumes.")
    add_train_arguments(t)
    args = parser.parse_args(argv)

    if args.command == "build":
        from pipeline.engine import build
        try:
            cfg = load_config(args.config, overrides_from_args(args))
        except (ValueError, OSError) as e:
            parser.error(f"bad config: {e}")
        summary = build(args.urls, args.out, cfg, address=args.address, retry_errors=args.retry_errors,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
        print(json.dumps(dataclasses.asdict(summary), indent=2))
    elif args.command == "train":
        from pipeline.train.cli import run
        return run(args, t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
