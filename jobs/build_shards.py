"""Ray Job entry point for the shard builder: thin on purpose, the package does the work.

    ray job submit --working-dir . -- python jobs/build_shards.py \
        --urls urls.parquet --out /data/shards --config jobs/configs/build.yaml

Inside a Ray job, ray.init() (no address) joins the job's cluster.
"""
import sys

from pipeline.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
