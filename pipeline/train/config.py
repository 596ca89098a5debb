"""Trainer configuration: nested dataclasses, presets, YAML/JSON files and CLI flags.

Same conventions as the build config (pipeline.config): every field is also a command-line
flag (`--model.video.width 384`), a config file is data only (yaml.safe_load / json), and
unknown keys raise. Defaults are the TVTSv2 ViT-B/16 recipe (tvts.md), with a byte-level
text tower; `--preset tiny` is a model small enough for CPU tests.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field


from pipeline.config import _apply, apply_file, apply_overrides, opt


@dataclass
class VideoConfig:
    image_size: int = opt(224, "S: frames are S x S pixels")
    patch_size: int = opt(16, "p: spatial patch size")
    tubelet: int = opt(1, "t: frames per spatiotemporal patch (tubelet t x p x p)")
    width: int = opt(768, "transformer width")
    depth: int = opt(12, "transformer blocks")
    heads: int = opt(12, "attention heads")
    mlp_ratio: float = opt(4.0, "MLP hidden size / width")
    norm: str = opt("imagenet", "pixel normalisation: imagenet or clip mean/std")
    mask_ratio: float = opt(0.5, "fraction of patches dropped when a batch carries no tube_mask")
    grad_checkpointing: bool = opt(False, "recompute block activations in backward (less memory)")
    attention: str = opt("joint", "joint (all kept tokens together) or divided (TVTSv2: temporal "
                         "then spatial attention; needed to start from CLIP image weights)")
    act: str = opt("gelu", "MLP activation: gelu, or quick_gelu for OpenAI CLIP weights")
    pretrained: str = opt("", "local CLIP image-tower weights: an OpenAI/OpenCLIP file or a Hugging "
                          "Face CLIP directory (pipeline.train.weights); empty = random init")


@dataclass
class TextConfig:
    vocab_size: int = opt(259, "token ids: 259 = byte tokenizer (256 bytes + pad, bos, eos)")
    context_length: int = opt(96, "transcript tokens L (positional embeddings; the loader pads/cuts to it)")
    width: int = opt(512, "transformer width")
    depth: int = opt(12, "transformer blocks")
    heads: int = opt(8, "attention heads")
    mlp_ratio: float = opt(4.0, "MLP hidden size / width")
    frozen_layers: int = opt(9, "the first N blocks and the embeddings are frozen (TVTSv2 "
                             "degradation-free rule: 9 of 12 for B, 18 of 24 for H)")
    causal: bool = opt(True, "causal attention mask (as CLIP's text tower)")
    pool: str = opt("eot", "text feature: eot (last real token) or mean (over real tokens)")
    act: str = opt("gelu", "MLP activation: gelu, or quick_gelu for OpenAI CLIP weights")
    pretrained: str = opt("", "local text-tower weights: an OpenAI/OpenCLIP file or a Hugging Face "
                          "CLIP directory (pipeline.train.weights); empty = random init")


@dataclass
class HeadConfig:
    depth: int = opt(2, "sorting-head transformer blocks")
    heads: int = opt(8, "sorting-head attention heads (its width is the video width)")


@dataclass
class ModelConfig:
    units: int = opt(4, "K: transcripts per sample (positions to sort into)")
    frames_per_unit: int = opt(3, "F: frames per unit; the clip has T = K x F frames")
    embed_dim: int = opt(512, "joint video-text embedding size")
    dropout: float = opt(0.0, "dropout in attention and MLPs")
    sort_weight: float = opt(2.0, "weight of the transcript-sorting cross-entropy")
    contrastive_weight: float = opt(1.0, "weight of the video-text InfoNCE loss")
    temperature: float = opt(0.05, "InfoNCE temperature")
    gather_contrastive: bool = opt(True, "InfoNCE over the whole global batch (all ranks)")
    video: VideoConfig = field(default_factory=VideoConfig)
    text: TextConfig = field(default_factory=TextConfig)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class OptimConfig:
    lr: float = opt(1e-4, "peak learning rate of new modules")
    pretrained_lr: float = opt(1e-7, "peak learning rate of weights loaded from `pretrained`")
    weight_decay: float = opt(0.05, "AdamW weight decay (not on biases, norms, embeddings)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.98, "AdamW beta2")
    eps: float = opt(1e-6, "AdamW epsilon")
    warmup_steps: int = opt(1000, "linear warmup steps")
    min_lr_ratio: float = opt(0.01, "cosine decay ends at lr x this")
    grad_clip: float = opt(1.0, "clip the global grad norm to this; 0 = off")


@dataclass
class DataConfig:
    num_workers: int = opt(-1, "loader worker processes per rank; -1 = the loader's default")
    decoder: str = opt("decord", "clip decoder: decord (CPU) or torchcodec (CPU, or NVDEC with "
                       "decode_device=cuda; needs a torchcodec matching the torch build)")
    decode_device: str = opt("cpu", "cpu, or cuda (torchcodec only): frames decoded on this "
                             "rank's GPU, in the main process (no loader workers)")
    tokenizer: str = opt("", "local tokenizer.json (or its directory); empty = byte tokenizer. "
                         "Set model.text.vocab_size to match")
    manifest: str = opt("", "the build's manifest/ directory (sample counts without reading tars)")


@dataclass
class TrainConfig:
    steps: int = opt(10000, "optimizer steps in total (a resumed run continues up to this)")
    batch_size: int = opt(12, "samples per micro-batch per worker (the loader's batch size)")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    amp: str = opt("auto", "mixed precision: auto (bf16 on CUDA when supported, else fp16; "
                   "off on CPU), bf16, fp16 or off")
    device: str = opt("auto", "auto, cpu or cuda[:N] (under Ray Train: the worker's device)")
    seed: int = opt(0, "seed of the model init and of every random draw of the trainer")
    threads: int = opt(0, "torch CPU threads; 0 = torch's default")
    log_every: int = opt(50, "steps between metric lines")
    ckpt_every: int = opt(1000, "steps between checkpoints (and one at the end); 0 = only at the end")
    out: str = opt("train_out", "output directory: ckpt/last.pt, log.jsonl, config.json")
    resume: bool = opt(True, "continue from OUT/ckpt/last.pt when it exists")
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Named sets of overrides (dotted keys), applied before the config file and the flags.
PRESETS: dict[str, dict] = {
    # TVTSv2 ViT-B/16 shape (the defaults).
    "base16": {},
    # A model that trains on 2 CPU cores in seconds: 32 px frames, 8 px patches, 64 wide.
    "tiny": {
        "batch_size": 16, "log_every": 25, "ckpt_every": 0,
        "model.embed_dim": 64,
        "model.video.image_size": 32, "model.video.patch_size": 8, "model.video.width": 64,
        "model.video.depth": 2, "model.video.heads": 4,
        "model.text.context_length": 32, "model.text.width": 64, "model.text.depth": 2,
        "model.text.heads": 4, "model.text.frozen_layers": 1,
        "model.head.depth": 2, "model.head.heads": 4,
        # tuned on the synthetic colour-sorting task: 1e-3 or grad clipping stall it at chance
        "optim.lr": 5e-4, "optim.warmup_steps": 20, "optim.weight_decay": 0.01, "optim.grad_clip": 0.0,
    },
    # OpenAI CLIP ViT-B/16 shapes, as TVTSv2 B/16 trains them: divided space-time video tower,
    # 12 frames, text blocks 0-8 frozen. Point model.video.pretrained and model.text.pretrained
    # at a local CLIP checkpoint (a Hugging Face CLIP directory serves both) and
    # data.tokenizer at its tokenizer.json.
    "clip_b16": {
        "model.embed_dim": 512,
        "model.video.image_size": 224, "model.video.patch_size": 16, "model.video.width": 768,
        "model.video.depth": 12, "model.video.heads": 12, "model.video.attention": "divided",
        "model.video.act": "quick_gelu", "model.video.norm": "clip",
        "model.text.vocab_size": 49408, "model.text.context_length": 77, "model.text.width": 512,
        "model.text.depth": 12, "model.text.heads": 8, "model.text.act": "quick_gelu",
        "model.text.frozen_layers": 9,
    },
    # A ViT-Tiny-sized model on 112 px frames: what bench/bench_train.py times on CPU.
    "small": {
        "batch_size": 8,
        "model.embed_dim": 192,
        "model.video.image_size": 112, "model.video.patch_size": 16, "model.video.width": 192,
        "model.video.depth": 6, "model.video.heads": 3,
        "model.text.context_length": 64, "model.text.width": 192, "model.text.depth": 4,
        "model.text.heads": 3, "model.text.frozen_layers": 3,
        "model.head.depth": 2, "model.head.heads": 3,
        "optim.lr": 5e-4, "optim.warmup_steps": 100,
    },
}


def load_train_config(path: str | None = None, overrides: dict | None = None,
                      preset: str | None = None) -> TrainConfig:
    """Defaults, then the preset, then the YAML/JSON file (nested sections), then overrides."""
    cfg = TrainConfig()
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (have: {', '.join(PRESETS)})")
        apply_overrides(cfg, PRESETS[preset])
    apply_overrides(apply_file(cfg, path), overrides)
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> TrainConfig:
    """The inverse of TrainConfig.to_dict (used to ship a config to Ray workers)."""
    cfg = TrainConfig()
    _apply(cfg, copy.deepcopy(data))
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    m, v, t = cfg.model, cfg.model.video, cfg.model.text
    problems = []
    if v.image_size % v.patch_size:
        problems.append(f"video.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
    if (m.units * m.frames_per_unit) % v.tubelet:
        problems.append(f"T = units x frames_per_unit = {m.units * m.frames_per_unit} is not a "
                        f"multiple of video.tubelet {v.tubelet}")
    for name, width, heads in (("video", v.width, v.heads), ("text", t.width, t.heads),
                               ("head", v.width, m.head.heads)):
        if width % heads:
            problems.append(f"{name}: width {width} is not a multiple of heads {heads}")
    if not 0 <= t.frozen_layers <= t.depth:
        problems.append(f"text.frozen_layers {t.frozen_layers} is outside 0..{t.depth}")
    if not 0.0 <= v.mask_ratio < 1.0:
        problems.append(f"video.mask_ratio {v.mask_ratio} is outside [0, 1)")
    if t.pool not in ("eot", "mean"):
        problems.append(f"text.pool {t.pool!r}: expected eot or mean")
    if v.attention not in ("joint", "divided"):
        problems.append(f"video.attention {v.attention!r}: expected joint or divided")
    for name, act in (("video", v.act), ("text", t.act)):
        if act not in ("gelu", "quick_gelu"):
            problems.append(f"{name}.act {act!r}: expected gelu or quick_gelu")
    if v.norm not in ("imagenet", "clip"):
        problems.append(f"video.norm {v.norm!r}: expected imagenet or clip")
    if cfg.amp not in ("auto", "bf16", "fp16", "off"):
        problems.append(f"amp {cfg.amp!r}: expected auto, bf16, fp16 or off")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.log_every < 1:
        problems.append("steps, batch_size, grad_accum and log_every must be >= 1")
    if problems:
        raise ValueError("; ".join(problems))
