"""TVTSv2-style model: masked video ViT, partly frozen text tower, transcript-sorting head.

    video uint8 [B, T, 3, S, S] --patchify, keep tube_mask patches, normalise--> ViT --> tokens, CLS
    text_ids [B, K, L]          --text tower (shallow blocks frozen)----------> K embeddings
    sorting head(video tokens, K embeddings.detach()) -> [B, K, K] logits: position of each transcript
    loss = sort_weight x CE(logits, order) + contrastive_weight x InfoNCE(CLS, mean of K embeddings)

Video attention (model.video.attention):
    joint    every kept token attends to every other (random init; cheapest for tiny models)
    divided  the official TVTSv2 block: temporal attention (each patch over the frames), then
             spatial attention (each frame over its kept patches), the CLS token attending to
             all; the temporal branch is new and starts at zero, so a divided encoder loaded from
             a CLIP image tower (model.video.pretrained) starts as CLIP applied to each frame.
Pretrained CLIP weights (OpenAI, OpenCLIP or Hugging Face layouts) load from local paths only:
see pipeline/train/weights.py.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipeline.train import weights
from pipeline.train.config import HeadConfig, ModelConfig, TextConfig, VideoConfig

PIXEL_STATS = {  # RGB mean and std on the 0-1 scale
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


# ----------------------------------------------------------------------------- building blocks

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention on F.scaled_dot_product_attention.

    Parameter names match nn.MultiheadAttention (in_proj_weight, in_proj_bias, out_proj), so
    CLIP/OpenCLIP state dicts load as they are. `mask`: bool, broadcastable to [B, heads, L, L],
    True = may attend.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, mask=None):
        B, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LN transformer block; names as CLIP's ResidualAttentionBlock (ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 act: str = "gelu"):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU() if act == "quick_gelu" else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = x + self.drop(self.attn(self.ln_1(x), mask))
        return x + self.drop(self.mlp(self.ln_2(x)))


def divided_attention(attn: Attention, x, mask, slots: int, valid, over_time: bool):
    """Self-attention of `attn`'s weights over x = [CLS; slots x n tokens, slot-major], divided:
    the CLS query attends to every token (`mask`: [B, 1, 1, L] or None); a patch query attends
    to CLS plus, over_time, the same patch in every slot, else every patch of its own slot
    (`valid`: bool [B, n], the padding of samples that kept fewer patches, or None)."""
    B, L, D = x.shape
    H, d = attn.heads, D // attn.heads
    n = (L - 1) // slots
    drop = attn.dropout if attn.training else 0.0
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(B, L, 3, H, d).permute(2, 0, 3, 1, 4)
    cls = F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=mask, dropout_p=drop)  # [B, H, 1, d]
    groups = n if over_time else slots

    def split(t):                          # [B, H, 1 + slots*n, d] -> [B*groups, H, len, d]
        t = t[:, :, 1:].reshape(B, H, slots, n, d)
        t = t.permute(0, 3, 1, 2, 4) if over_time else t.permute(0, 2, 1, 3, 4)
        return t.reshape(B * groups, H, -1, d)

    def with_cls(t, full):                 # prepend the CLS key / value to every group
        c = full[:, :, :1].unsqueeze(1).expand(B, groups, H, 1, d).reshape(B * groups, H, 1, d)
        return torch.cat([c, t], dim=2)

    m = None
    if valid is not None and not over_time:  # over time, a padded patch is padding in every slot
        m = torch.cat([valid.new_ones(B, 1), valid], 1)
        m = m.unsqueeze(1).expand(B, groups, n + 1).reshape(B * groups, 1, 1, n + 1)
    o = F.scaled_dot_product_attention(split(q), with_cls(split(k), k), with_cls(split(v), v),
                                       attn_mask=m, dropout_p=drop)
    o = o.view(B, groups, H, -1, d)
    o = o.permute(0, 2, 3, 1, 4) if over_time else o.permute(0, 2, 1, 3, 4)   # [B, H, slots, n, d]
    o = torch.cat([cls, o.reshape(B, H, slots * n, d)], dim=2)
    return attn.out_proj(o.transpose(1, 2).reshape(B, L, D))


class DividedBlock(Block):
    """CLIP's block (ln_1, attn, ln_2, mlp: these load from a CLIP image tower) plus temporal
    attention (ln_3, timeattn: new), in the official TVTSv2 order: temporal attention feeds the
    spatial attention's input, and the block's residual adds the spatial output and the MLP.
    timeattn starts with zero q/k/v and out_proj weights of one (as the official code): its
    output is exactly zero at init yet its value path gets gradients at once."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 act: str = "gelu"):
        super().__init__(width, heads, mlp_ratio, dropout, act)
        self.ln_3 = nn.LayerNorm(width)
        self.timeattn = Attention(width, heads, dropout)
        nn.init.zeros_(self.timeattn.in_proj_weight)
        nn.init.ones_(self.timeattn.out_proj.weight)

    def forward(self, x, mask=None, slots: int = 1, valid=None):
        t = x + self.drop(divided_attention(self.timeattn, self.ln_3(x), mask, slots, valid, True))
        x = x + self.drop(divided_attention(self.attn, self.ln_1(t), mask, slots, valid, False))
        return x + self.drop(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, act: str = "gelu", divided: bool = False):
        super().__init__()
        block = DividedBlock if divided else Block
        self.resblocks = nn.ModuleList(block(width, heads, mlp_ratio, dropout, act) for _ in range(depth))
        self.grad_checkpointing = False

    def forward(self, x, mask=None, start: int = 0, stop: int | None = None, **kw):
        """kw: what the blocks need beyond x and mask (DividedBlock: slots, valid)."""
        for blk in self.resblocks[start:stop]:
            if self.grad_checkpointing and self.training and x.requires_grad:
                x = checkpoint(blk, x, mask, use_reentrant=False, **kw)
            else:
                x = blk(x, mask, **kw)
        return x


# ----------------------------------------------------------------------------- video

class VideoEncoder(nn.Module):
    """ViT over t x p x p tubelets; only the patches kept by the tube mask are embedded and encoded.

    The mask is the same for every frame (TVTSv2's tube masking), so a clip of T frames with n kept
    patches is T/t x n tokens plus CLS: at mask ratio 0.5 the encoder does about half the work.
    Pixels arrive as uint8; float conversion and mean/std normalisation happen here, on the kept
    patches only. `attention`: joint or divided (module docstring); `load_pretrained` takes a
    CLIP image tower (tubelet > 1 inflates its patch filter: a still video embeds as the image).
    """

    def __init__(self, cfg: VideoConfig, num_frames: int, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.cfg = cfg
        p, t, W = cfg.patch_size, cfg.tubelet, cfg.width
        self.grid = cfg.image_size // p
        self.num_patches = self.grid ** 2
        self.num_slots = num_frames // t
        self.num_frames = num_frames
        # A linear map of the flattened (t, 3, p, p) tubelet == Conv3d(kernel = stride = (t, p, p)).
        self.patch_embed = nn.Linear(t * 3 * p * p, W, bias=False)
        scale = W ** -0.5
        self.cls_token = nn.Parameter(scale * torch.randn(W))
        self.pos_spatial = nn.Parameter(scale * torch.randn(self.num_patches, W))
        self.pos_temporal = nn.Parameter(scale * torch.randn(self.num_slots, W))
        self.ln_pre = nn.LayerNorm(W)
        self.divided = cfg.attention == "divided"
        self.transformer = Transformer(W, cfg.depth, cfg.heads, cfg.mlp_ratio, dropout, cfg.act, self.divided)
        self.transformer.grad_checkpointing = cfg.grad_checkpointing
        self.pretrained_names: set[str] = set()     # parameters loaded from a checkpoint
        self.ln_post = nn.LayerNorm(W)
        self.proj = nn.Linear(W, embed_dim, bias=False)
        mean, std = PIXEL_STATS[cfg.norm]
        self.register_buffer("pixel_mean", 255.0 * torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", 255.0 * torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None):
        """video uint8 [B, T, 3, S, S]; keep bool [B, N] (True = kept) or None (all kept).

        Returns (tokens [B, 1 + T/t x n, W], valid [B, 1 + T/t x n] or None, cls embedding [B, E]).
        `valid` marks padding when samples keep different numbers of patches.
        """
        B, T, C, S, S2 = video.shape
        p, t, g = self.cfg.patch_size, self.cfg.tubelet, self.grid
        if T != self.num_frames or S != self.cfg.image_size or S2 != S or C != 3:
            raise ValueError(f"video {tuple(video.shape)}: expected [B, {self.num_frames}, 3, "
                             f"{self.cfg.image_size}, {self.cfg.image_size}]")
        # [B, T/t, t, 3, g, p, g, p] -> [B, T/t, g*g, t*3*p*p]: one row per tubelet, still uint8
        x = video.view(B, T // t, t, C, g, p, g, p).permute(0, 1, 4, 6, 2, 3, 5, 7)
        x = x.reshape(B, T // t, self.num_patches, t * C * p * p)
        valid = None
        if keep is not None:
            keep = keep.cpu()                 # index maths on the host: no device sync
            if bool(keep.all()):
                keep = None
        if keep is None:
            pos = self.pos_spatial.unsqueeze(0)                              # [1, N, W]
        else:
            counts = keep.sum(1)
            n = int(counts.max())
            # kept patch indices first (in patch order), then the dropped ones; take n
            idx = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :n]   # [B, n]
            if not bool((counts == n).all()):
                valid = (torch.arange(n).unsqueeze(0) < counts.unsqueeze(1)).to(video.device, non_blocking=True)
            idx = idx.to(video.device, non_blocking=True)
            x = x.gather(2, idx.view(B, 1, n, 1).expand(B, T // t, n, x.shape[-1]))
            pos = self.pos_spatial[idx]                                      # [B, n, W]
        x = x.view(*x.shape[:3], t, C, p, p)
        x = (x.float() - self.pixel_mean) / self.pixel_std                   # [B, T/t, n, t, 3, p, p]
        x = self.patch_embed(x.flatten(3))                                   # [B, T/t, n, W]
        x = x + pos.unsqueeze(1) + self.pos_temporal.view(1, T // t, 1, -1)
        x = x.flatten(1, 2)
        x = torch.cat([self.cls_token.view(1, 1, -1).expand(B, 1, -1).to(x.dtype), x], dim=1)
        mask, spatial = None, valid
        if valid is not None:
            valid = torch.cat([valid.new_ones(B, 1), valid.repeat(1, T // t)], dim=1)
            mask = valid[:, None, None, :]
        kw = {"slots": T // t, "valid": spatial} if self.divided else {}
        x = self.transformer(self.ln_pre(x), mask, **kw)
        x = self.ln_post(x)
        return x, valid, self.proj(x[:, 0])

    def load_pretrained(self, path: str) -> None:
        """A CLIP image tower (OpenAI/OpenCLIP `visual.*` or Hugging Face `vision_model.*`, local
        file or directory) into this encoder: patch filter (inflated over the tubelet), CLS (with
        its position folded in), spatial positions (resized when the grid differs), ln_pre, the
        blocks' CLIP parts, ln_post, proj. pos_temporal and the divided blocks' temporal parts
        stay new: pos_temporal is zeroed so that the encoder starts as the image tower."""
        clip = weights.image_state(weights.read_checkpoint(path))
        if "conv1.weight" not in clip:
            raise ValueError(f"{path}: no CLIP image tower in it (no visual.conv1 / vision_model.embeddings)")
        t, W = self.cfg.tubelet, self.cfg.width
        conv, pos = clip.pop("conv1.weight"), clip.pop("positional_embedding")
        if conv.shape[0] != W or conv.shape[2] != self.cfg.patch_size:
            raise ValueError(f"{path}: image tower width/patch {conv.shape[0]}/{conv.shape[2]} != "
                             f"model.video width/patch_size {W}/{self.cfg.patch_size}")
        g0 = math.isqrt(pos.shape[0] - 1)
        grid = pos[1:].float()
        if g0 != self.grid:                # bicubic resize of the position grid (another image size)
            grid = F.interpolate(grid.t().reshape(1, W, g0, g0), size=(self.grid, self.grid),
                                 mode="bicubic", align_corners=False).reshape(W, -1).t()
        theirs = {"patch_embed.weight": torch.cat([conv.flatten(1) / t] * t, dim=1),
                  "cls_token": clip.pop("class_embedding") + pos[0],
                  "pos_spatial": grid.to(pos.dtype)}
        if "proj" in clip:
            theirs["proj.weight"] = clip.pop("proj").t()
        theirs.update(clip)
        own = {k: v for k, v in self.state_dict().items()
               if k != "pos_temporal" and ".ln_3." not in k and ".timeattn." not in k}
        self.load_state_dict(weights.check_and_pick(own, theirs, path, "image-tower"), strict=False)
        with torch.no_grad():
            self.pos_temporal.zero_()
        self.pretrained_names = set(own)


# ----------------------------------------------------------------------------- text

class TextEncoder(nn.Module):
    """CLIP-style text tower; the embeddings and the first `frozen_layers` blocks are frozen.

    Frozen parts have requires_grad=False, stay in eval mode and run under no_grad (no activations
    kept for them: TVTSv2's degradation-free rule is also cheap).

    State-dict keys (the names of OpenAI CLIP's / OpenCLIP's text tower, so their text weights load
    as they are, given the matching tokenizer, vocab_size, context_length, width, heads, act):
        token_embedding.weight                       [vocab_size, width]
        positional_embedding                         [context_length, width]
        transformer.resblocks.{i}.ln_1.{weight,bias}
        transformer.resblocks.{i}.attn.in_proj_weight / in_proj_bias   [3 width, width] / [3 width]
        transformer.resblocks.{i}.attn.out_proj.{weight,bias}
        transformer.resblocks.{i}.ln_2.{weight,bias}
        transformer.resblocks.{i}.mlp.c_fc.{weight,bias} / mlp.c_proj.{weight,bias}
        ln_final.{weight,bias}
        text_projection                              [width, embed_dim] (feature @ text_projection)
    """

    def __init__(self, cfg: TextConfig, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.frozen_layers = cfg.frozen_layers
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, dropout, cfg.act)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(cfg.width ** -0.5 * torch.randn(cfg.width, embed_dim))
        self.pretrained_loaded = False
        self.freeze()

    def frozen_modules(self) -> list[nn.Module]:
        if self.frozen_layers == 0:
            return []
        return [self.token_embedding, *self.transformer.resblocks[:self.frozen_layers]]

    def freeze(self) -> None:
        if self.frozen_layers:
            self.positional_embedding.requires_grad_(False)
        for m in self.frozen_modules():
            m.requires_grad_(False)
            m.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids long [N, L], mask bool [N, L] (True = real token) -> features [N, embed_dim]."""
        N, L = ids.shape
        if L > self.cfg.context_length:
            raise ValueError(f"text length {L} > model.text.context_length {self.cfg.context_length}")
        mask = mask.clone()
        mask[:, 0] = True                     # an empty transcript still has one token to attend to
        attn = mask[:, None, None, :]
        if self.cfg.causal:
            attn = attn & torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
        f = self.frozen_layers
        with torch.no_grad() if f else contextlib.nullcontext():
            x = self.token_embedding(ids) + self.positional_embedding[:L]
            x = self.transformer(x, attn, 0, f)
        x = self.transformer(x, attn, f, None)
        x = self.ln_final(x)
        if self.cfg.pool == "eot":            # the last real token (the eos of a bos..eos sequence)
            last = mask.long().cumsum(1).argmax(1)
            x = x[torch.arange(N, device=x.device), last]
        else:
            w = mask.unsqueeze(-1).to(x.dtype)
            x = (x * w).sum(1) / w.sum(1)
        return x @ self.text_projection.to(x.dtype)

    def load_pretrained(self, path: str) -> None:
        """Text-tower weights from a local file or directory: OpenAI CLIP / OpenCLIP names (the
        ones above), a Hugging Face CLIP checkpoint directory (renamed in weights.text_state), or
        a TVTSModel checkpoint. A missing or mis-shaped key raises; other towers' keys are ignored."""
        theirs = weights.text_state(weights.read_checkpoint(path))
        self.load_state_dict(weights.check_and_pick(self.state_dict(), theirs, path, "text-tower"), strict=True)
        self.pretrained_loaded = True


# ----------------------------------------------------------------------------- sorting head

class SortHead(nn.Module):
    """Small transformer over [video tokens ; K transcript embeddings] with a 2-way type embedding.

    The transcripts carry no position information, so the head can only place transcript i by
    finding where in the video its content is. Output: logits [B, K, K] (transcript i -> position).
    """

    def __init__(self, cfg: HeadConfig, width: int, embed_dim: int, units: int, dropout: float = 0.0):
        super().__init__()
        self.text_in = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.type_embedding = nn.Parameter(0.02 * torch.randn(2, width))
        self.transformer = Transformer(width, cfg.depth, cfg.heads, 4.0, dropout)
        self.ln = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, units)

    def forward(self, video_tokens, video_valid, text_emb):
        B, K = text_emb.shape[:2]
        t = self.text_in(text_emb) + self.type_embedding[1]
        v = video_tokens + self.type_embedding[0]
        x = torch.cat([v, t.to(v.dtype)], dim=1)
        mask = None
        if video_valid is not None:
            mask = torch.cat([video_valid, video_valid.new_ones(B, K)], dim=1)[:, None, None, :]
        x = self.transformer(x, mask)
        return self.classifier(self.ln(x[:, -K:]))


# ----------------------------------------------------------------------------- the model

def random_tube_mask(batch: int, num_patches: int, ratio: float, device=None, generator=None) -> torch.Tensor:
    """bool [batch, num_patches], True = kept; exactly round(N x (1 - ratio)) kept per sample."""
    keep = max(1, round(num_patches * (1.0 - ratio)))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    idx = noise.argsort(dim=1)[:, :keep]
    return torch.zeros(batch, num_patches, dtype=torch.bool, device=device).scatter_(1, idx, True)


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated; only this rank's own rows carry a gradient."""
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, gather: bool,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised a[i] and b[i]; valid (bool [B]): rows that are
    False are neither anchors nor negatives.

    With `gather` under torch.distributed, the loss is over the global batch (every rank's rows
    are anchors and negatives). Each rank computes the same global loss but can differentiate it
    only through its own rows; its gradient is scaled by the world size so that DDP's average
    over ranks equals the gradient of the global loss (the value returned is unscaled).
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    w = torch.ones(a.shape[0], device=a.device) if valid is None else valid.float()
    world = 1
    if gather and torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            a, b, w = _gather_rows(a), _gather_rows(b), _gather_rows(w)
    labels = torch.arange(a.shape[0], device=a.device)
    drop = (w == 0).unsqueeze(0)                  # stand-in samples: not negatives either
    logits = a @ b.t() / temperature
    # a large finite value, not -inf: a batch of nothing but stand-ins must not give NaN
    per_row = 0.5 * (F.cross_entropy(logits.masked_fill(drop, -1e4), labels, reduction="none")
                     + F.cross_entropy(logits.t().masked_fill(drop, -1e4), labels, reduction="none"))
    loss = (per_row * w).sum() / w.sum().clamp(min=1.0)
    return loss if world == 1 else loss * world - loss.detach() * (world - 1)


class TVTSModel(nn.Module):
    """forward(batch) -> dict of losses and metric counts (see `forward`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.units = cfg.units
        self.video = VideoEncoder(cfg.video, cfg.units * cfg.frames_per_unit, cfg.embed_dim, cfg.dropout)
        self.text = TextEncoder(cfg.text, cfg.embed_dim, cfg.dropout)
        self.head = SortHead(cfg.head, cfg.video.width, cfg.embed_dim, cfg.units, cfg.dropout)
        if cfg.text.pretrained:
            self.text.load_pretrained(cfg.text.pretrained)
        if cfg.video.pretrained:
            self.video.load_pretrained(cfg.video.pretrained)

    def forward(self, batch: dict) -> dict:
        """batch: video uint8 [B,T,3,S,S], text_ids long [B,K,L], text_mask bool [B,K,L],
        order long [B,K], tube_mask bool [B,N] (optional: drawn with video.mask_ratio if absent),
        valid bool [B] (optional: False = a stand-in for an unusable sample, left out of losses
        and metrics).

        Returns: loss, sort_loss, contrastive_loss (scalars), logits [B,K,K], and detached counts
        for metrics: n (valid samples), exact (samples with all K transcripts placed right),
        correct_by_pos [K] (right placements per true position).
        """
        video, ids, tmask, order = batch["video"], batch["text_ids"], batch["text_mask"], batch["order"]
        B, K, L = ids.shape
        if K != self.units:
            raise ValueError(f"batch has {K} transcripts per sample, model.units is {self.units}")
        keep = batch.get("tube_mask")
        if keep is None and self.cfg.video.mask_ratio > 0:     # drawn on the host (CPU RNG)
            keep = random_tube_mask(B, self.video.num_patches, self.cfg.video.mask_ratio)
        tokens, valid, video_emb = self.video(video, keep)
        text_emb = self.text(ids.reshape(B * K, L), tmask.reshape(B * K, L)).view(B, K, -1)
        logits = self.head(tokens, valid, text_emb.detach()).float()
        ok = batch.get("valid")
        w = torch.ones(B, device=logits.device) if ok is None else ok.to(logits.device).float()
        ce = F.cross_entropy(logits.reshape(B * K, K), order.reshape(B * K), reduction="none").view(B, K)
        sort_loss = (ce.mean(1) * w).sum() / w.sum().clamp(min=1.0)
        con_loss = info_nce(video_emb, text_emb.mean(1), self.cfg.temperature, self.cfg.gather_contrastive,
                            None if ok is None else w > 0)
        loss = self.cfg.sort_weight * sort_loss + self.cfg.contrastive_weight * con_loss
        with torch.no_grad():
            correct = (logits.argmax(-1) == order) & (w > 0).unsqueeze(1)           # [B, K]
            by_pos = torch.zeros(K, device=order.device).index_add_(0, order.reshape(-1),
                                                                     correct.reshape(-1).float())
        return {"loss": loss, "sort_loss": sort_loss.detach(), "contrastive_loss": con_loss.detach(),
                "logits": logits.detach(), "n": w.sum(), "exact": correct.all(1).float().sum(),
                "correct_by_pos": by_pos}


def param_groups(model: TVTSModel, cfg_lr: float, pretrained_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases, norms, embeddings and tokens; weights loaded from a
    pretrained file train at pretrained_lr (the recipe's 1e-7), new modules at cfg_lr."""
    pretrained = {id(p) for n, p in model.video.named_parameters() if n in model.video.pretrained_names}
    if model.text.pretrained_loaded:
        pretrained |= {id(p) for p in model.text.parameters()}
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "embedding" in name or name.endswith(("cls_token", "pos_spatial", "pos_temporal"))
        key = (id(p) in pretrained, no_decay)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": pretrained_lr if pre else cfg_lr,
             "weight_decay": 0.0 if nd else weight_decay, "name": f"{'pretrained' if pre else 'new'}"
             f"{'-no_decay' if nd else ''}"} for (pre, nd), ps in sorted(groups.items())]


def count_params(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": total, "trainable": trainable}


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over `warmup` steps, then cosine down to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
