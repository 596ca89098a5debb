"""Ray Job entry point for training: the same training function under Ray Train.

    ray job submit --working-dir . --runtime-env jobs/configs/runtime_env.yaml -- \
        python jobs/train.py --shards 's3://bucket/shards/shard-{000000..000999}.tar' \
        --config jobs/configs/train.yaml --ray-workers 8 --gpu

Without --ray-workers it trains in the job's driver process.
"""
import sys

from pipeline.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
