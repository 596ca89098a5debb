"""TVTSv2-style trainer: transcript sorting + video-text contrastive on masked video.

Public API
    train(cfg, batches_factory, ...) -> dict       the training loop (pipeline.train.loop)
    evaluate(model, batches, max_batches)           sorting metrics of a model
    build_model(cfg) / load_model(checkpoint)       the model as train() starts it / as it saved it
    train_ray(cfg, batches_factory, num_workers=..)  the same loop under Ray Train (ray_train.py)
    load_train_config(path, overrides, preset)      TrainConfig from defaults/preset/file/flags
    TVTSModel                                       the model (pipeline.train.model)
    ColourSortBatches                               synthetic source (pipeline.train.synthetic)
    shard_batches_factory(shards, cfg)              the WebDataset loader adapter (pipeline.train.data)
    main(argv)                                      `train --shards ... | --synthetic` (pipeline.train.cli)

The batch contract (what a batches_factory's iterable yields), a dict of:
    video      uint8 [B, T, 3, S, S]  T = K units x F frames per unit
    text_ids   long  [B, K, L]        the K transcripts in SHUFFLED order (byte tokenizer by default:
                                      ids 0-255 bytes, 256 pad, 257 bos, 258 eos)
    text_mask  bool  [B, K, L]        True = real token
    order      long  [B, K]           order[b, i] = true temporal position of shuffled transcript i
    tube_mask  bool  [B, N]           N = (S/patch)^2 patches, True = kept, shared by every frame
                                      (optional: drawn with model.video.mask_ratio when absent)
    keys       list[str]
Pixels are converted and normalised on the device by the model. Under DDP every rank must get
the same number of batches of the same batch size (InfoNCE gathers across ranks).
"""
import importlib

# Names are imported on first use, so `python -m pipeline build` (which builds the `train`
# subcommand's parser from pipeline.train.cli) does not pay for importing torch.
_EXPORTS = {
    "TrainConfig": "pipeline.train.config", "load_train_config": "pipeline.train.config",
    "train": "pipeline.train.loop", "evaluate": "pipeline.train.loop",
    "build_model": "pipeline.train.loop", "load_model": "pipeline.train.loop",
    "TVTSModel": "pipeline.train.model", "ColourSortBatches": "pipeline.train.synthetic",
    "shard_batches_factory": "pipeline.train.data", "train_ray": "pipeline.train.ray_train",
    "main": "pipeline.train.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.train' has no attribute {name!r}")
