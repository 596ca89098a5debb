"""Adapter from shard URLs to a batches_factory, for the streaming loader (pipeline.loader).

pipeline.loader is imported lazily, when a worker first asks for its batches (so the trainer's
import does not pay for decord). The call below is the one place that knows the loader's API.

Used: pipeline.loader.make_batches(shards, *, batch_size, units, frames_per_unit, image_size,
patch_size, mask_ratio, text_len, seed, rank, world_size, num_workers, tokenizer, manifest,
decoder, decode_device) -> a
StreamLoader: batch dicts (the contract in pipeline/train/__init__.py, plus `valid`), with
state_dict()/load_state_dict() for exact resume and the same number of batches on every rank.
One iteration is one epoch; the trainer starts the next one when it runs out.
"""
from __future__ import annotations

import functools

from pipeline.train.config import TrainConfig


def _make(shards: str, cfg_dict: dict, *, rank: int, world_size: int):
    from pipeline.train.config import config_from_dict
    from pipeline.train.loop import DataError
    try:
        from pipeline import loader
    except ImportError as e:
        raise DataError("training from shards needs pipeline.loader (the streaming loader), "
                           f"which cannot be imported: {e}") from e
    cfg = config_from_dict(cfg_dict)
    m = cfg.model
    d = cfg.data
    return loader.make_batches(
        shards, batch_size=cfg.batch_size, units=m.units, frames_per_unit=m.frames_per_unit,
        image_size=m.video.image_size, patch_size=m.video.patch_size, mask_ratio=m.video.mask_ratio,
        text_len=m.text.context_length, seed=cfg.seed, rank=rank, world_size=world_size,
        num_workers=None if d.num_workers < 0 else d.num_workers, tokenizer=d.tokenizer or None,
        manifest=d.manifest or None, decoder=d.decoder, decode_device=d.decode_device)


def shard_batches_factory(shards: str, cfg: TrainConfig):
    """batches_factory(rank=, world_size=) over WebDataset shards (a URL, glob or brace pattern).
    Picklable (a partial of plain data), so Ray Train workers can build their own loader."""
    return functools.partial(_make, shards, cfg.to_dict())
