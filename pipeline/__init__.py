"""Video-language shard builder: URL lists -> ASR-aligned clips -> shuffled WebDataset shards."""
__version__ = "0.1.0"
