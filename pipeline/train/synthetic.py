"""A synthetic, in-memory batch source whose order IS visible in the video.

Each of the K units of a sample is F frames of one solid colour (plus pixel noise), and its
transcript names that colour ("red", "green", ...), byte-tokenised. The transcripts are shuffled
and `order[b, i]` is the true position of the i-th shuffled transcript, exactly as the loader's
batch contract says. A model that sorts these has learnt to read time from the video.

The source is infinite, deterministic (batch i of rank r depends only on seed, r, i) and
resumable (state_dict / load_state_dict), so checkpoint-resume can be tested exactly.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.text import ByteTokenizer

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 220, 50),
    "cyan": (60, 210, 220), "magenta": (210, 60, 200), "white": (240, 240, 240), "black": (15, 15, 15),
    "orange": (240, 140, 30), "purple": (120, 50, 160), "grey": (128, 128, 128), "brown": (120, 75, 40),
}


class ColourSortBatches:
    """Iterable of batch dicts (see pipeline.train: the batch contract).

    delay_s: sleep this long before each batch (to emulate a slow loader in the benchmark).
    with_tube_mask: False leaves tube_mask out (the trainer then draws one with its own RNG).
    """

    def __init__(self, batch_size: int, units: int = 4, frames_per_unit: int = 3, image_size: int = 32,
                 patch_size: int = 8, text_len: int = 16, mask_ratio: float = 0.5, seed: int = 0,
                 rank: int = 0, world_size: int = 1, noise: int = 20, templates: tuple[str, ...] = ("{}",),
                 colours: dict | None = None, delay_s: float = 0.0, with_tube_mask: bool = True):
        self.batch_size, self.units, self.frames_per_unit = batch_size, units, frames_per_unit
        self.image_size, self.patch_size, self.text_len = image_size, patch_size, text_len
        self.mask_ratio, self.seed, self.rank, self.world_size = mask_ratio, seed, rank, world_size
        self.noise, self.templates, self.delay_s = noise, templates, delay_s
        self.with_tube_mask = with_tube_mask
        self.colours = colours or COLOURS
        if units > len(self.colours):
            raise ValueError(f"{units} units need {units} distinct colours, have {len(self.colours)}")
        self._names = list(self.colours)
        self._rgb = np.array([self.colours[n] for n in self._names], dtype=np.int16)
        self._tok = ByteTokenizer(text_len)
        self._next = 0

    def state_dict(self) -> dict:
        return {"next": self._next, "seed": self.seed, "rank": self.rank}

    def load_state_dict(self, state: dict) -> None:
        self._next = int(state["next"])

    def __iter__(self):
        while True:
            i = self._next
            self._next += 1           # count it before handing it out: state_dict() = batches consumed
            if self.delay_s:
                time.sleep(self.delay_s)
            yield self.batch(i)

    def batch(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.rank, i])
        B, K, F, S = self.batch_size, self.units, self.frames_per_unit, self.image_size
        n_patches = (S // self.patch_size) ** 2
        colour = np.stack([rng.choice(len(self._names), K, replace=False) for _ in range(B)])  # [B, K] true order
        frames = np.repeat(self._rgb[colour], F, axis=1)                                      # [B, T, 3]
        video = frames[:, :, :, None, None] + rng.integers(-self.noise, self.noise + 1, (B, K * F, 3, S, S))
        video = np.clip(video, 0, 255).astype(np.uint8)
        order = np.stack([rng.permutation(K) for _ in range(B)])                             # [B, K]
        texts = [self.templates[rng.integers(len(self.templates))].format(self._names[colour[b, order[b, j]]])
                 for b in range(B) for j in range(K)]
        ids, mask = self._tok(texts)
        out = {"video": torch.from_numpy(video), "text_ids": ids.view(B, K, -1),
               "text_mask": mask.view(B, K, -1), "order": torch.from_numpy(order),
               "keys": [f"synth-{self.rank}-{i}-{b}" for b in range(B)]}
        if self.with_tube_mask:
            keep = max(1, round(n_patches * (1.0 - self.mask_ratio)))
            tube = np.zeros((B, n_patches), dtype=bool)
            for b in range(B):
                tube[b, rng.choice(n_patches, keep, replace=False)] = True
            out["tube_mask"] = torch.from_numpy(tube)
        return out


def colour_factory(batch_size: int, **kwargs):
    """A batches_factory(rank, world_size) for pipeline.train.train (picklable: Ray-safe)."""
    import functools
    return functools.partial(ColourSortBatches, batch_size, **kwargs)


def factory_for(cfg, **kwargs):
    """The synthetic source shaped by a TrainConfig (sizes, K, F, mask ratio, seed)."""
    m = cfg.model
    args = dict(units=m.units, frames_per_unit=m.frames_per_unit, image_size=m.video.image_size,
                patch_size=m.video.patch_size, text_len=min(16, m.text.context_length),
                mask_ratio=m.video.mask_ratio, seed=cfg.seed)
    args.update(kwargs)
    return colour_factory(cfg.batch_size, **args)
