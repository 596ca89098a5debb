"""`python -m pipeline.train --shards ... | --synthetic [options]` (see pipeline.train.cli)."""
import sys

from pipeline.train.cli import main

sys.exit(main())
