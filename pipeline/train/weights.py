"""Pretrained CLIP weights from local files, mapped onto the trainer's towers (never a download).

Where the weights come from, and how they are recognised:
- OpenAI CLIP / OpenCLIP: a torch file (`.pt`, `.bin`, `.pth`) or `.safetensors`, or a directory
  holding `open_clip_model.safetensors` / `open_clip_pytorch_model.bin`. Keys are
  `transformer.resblocks.N...` (text) and `visual.*` (image). Our towers use the same names, so
  these need no renaming: only a prefix strip (`module.`, `model.`, `text.`, ...).
- Hugging Face transformers CLIP (`CLIPModel`, `CLIPTextModelWithProjection`,
  `CLIPVisionModelWithProjection`): a checkpoint directory with `model.safetensors` (or a
  sharded `model.safetensors.index.json`, or `pytorch_model.bin`), keys `text_model.*`,
  `vision_model.*`, `text_projection.weight`, `visual_projection.weight`. Renamed here: q/k/v
  projections are concatenated into one in_proj, projections transposed.

`text_state(ckpt)` and `image_state(ckpt)` return state dicts in our names; the towers check
shapes and load them (model.TextEncoder.load_pretrained, model.VideoEncoder.load_pretrained).
The architecture sizes (width, depth, heads, vocab, context length, patch size, quick_gelu) must
match the checkpoint: `hf_sizes(dir)` reads them from a Hugging Face config.json.
"""
from __future__ import annotations

import json
import os

import torch

_PREFIXES = ("module.", "model.", "clip.", "text_encoder.", "video_encoder.")
_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
          "open_clip_pytorch_model.bin")


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a local checkpoint file or directory, as one flat dict (CPU)."""
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):                      # sharded Hugging Face save
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
            state: dict = {}
            for name in files:
                state.update(read_checkpoint(os.path.join(path, name)))
            return state
        for name in _FILES:
            if os.path.exists(os.path.join(path, name)):
                return read_checkpoint(os.path.join(path, name))
        raise FileNotFoundError(f"{path}: no checkpoint file in it (looked for {', '.join(_FILES)})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint (weights load from local paths only)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):                # training-framework wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _strip(state: dict, inner: str) -> dict:
    """Drop wrapper prefixes in front of `inner` (e.g. 'module.model.text_model.' -> 'text_model.')."""
    out = {}
    for key, value in state.items():
        k = key
        while not k.startswith(inner) and k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = value
    return out


def _is_hf(state: dict) -> bool:
    return any(".encoder.layers." in k for k in state)


def _hf_blocks(state: dict, src: str, dst: str) -> dict:
    """HF encoder layers `src`N.* -> CLIP resblocks `dst`N.* (q, k, v -> one in_proj)."""
    out = {}
    n = 0
    while f"{src}{n}.self_attn.q_proj.weight" in state:
        s, d = f"{src}{n}.", f"{dst}{n}."
        qkv = [state[f"{s}self_attn.{x}_proj.weight"] for x in "qkv"]
        out[f"{d}attn.in_proj_weight"] = torch.cat(qkv)
        out[f"{d}attn.in_proj_bias"] = torch.cat([state[f"{s}self_attn.{x}_proj.bias"] for x in "qkv"])
        for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"{d}{ours}.{p}"] = state[f"{s}{theirs}.{p}"]
        n += 1
    return out


def _ln(state: dict, src: str, dst: str) -> dict:
    return {f"{dst}.{p}": state[f"{src}.{p}"] for p in ("weight", "bias")}


def text_state(state: dict) -> dict[str, torch.Tensor]:
    """The text tower's weights in OpenAI CLIP names (what model.TextEncoder uses)."""
    state = _strip(state, "text_model." if _is_hf(state) else "transformer.")
    if _is_hf(state) and "text_model.embeddings.token_embedding.weight" in state:
        t = "text_model."
        out = {"token_embedding.weight": state[f"{t}embeddings.token_embedding.weight"],
               "positional_embedding": state[f"{t}embeddings.position_embedding.weight"],
               **_ln(state, f"{t}final_layer_norm", "ln_final"),
               **_hf_blocks(state, f"{t}encoder.layers.", "transformer.resblocks.")}
        if "text_projection.weight" in state:          # nn.Linear [E, W]; ours is x @ P, P [W, E]
            out["text_projection"] = state["text_projection.weight"].t().contiguous()
        return out
    # OpenAI / OpenCLIP names already (a TVTSModel checkpoint has them under "text.")
    return {(k[5:] if k.startswith("text.") else k): v for k, v in state.items()
            if not k.startswith(("visual.", "vision_model.", "logit_"))}


def image_state(state: dict) -> dict[str, torch.Tensor]:
    """The image tower's weights in OpenAI CLIP names, without the `visual.` prefix:
    conv1.weight, class_embedding, positional_embedding, ln_pre, transformer.resblocks.N.*,
    ln_post, proj ([W, E], x @ proj)."""
    if any(k.endswith("vision_model.embeddings.patch_embedding.weight") for k in state):
        state = _strip(state, "vision_model.")
        v = "vision_model."
        out = {"conv1.weight": state[f"{v}embeddings.patch_embedding.weight"],
               "class_embedding": state[f"{v}embeddings.class_embedding"],
               "positional_embedding": state[f"{v}embeddings.position_embedding.weight"],
               **_ln(state, f"{v}pre_layrnorm", "ln_pre"),       # sic: HF's spelling
               **_ln(state, f"{v}post_layernorm", "ln_post"),
               **_hf_blocks(state, f"{v}encoder.layers.", "transformer.resblocks.")}
        if "visual_projection.weight" in state:
            out["proj"] = state["visual_projection.weight"].t().contiguous()
        return out
    state = _strip(state, "visual.")
    return {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}


def check_and_pick(own: dict, theirs: dict, path: str, what: str) -> dict:
    """theirs restricted to own's keys; a missing or mis-shaped key raises with the names."""
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise ValueError(f"{path}: missing {what} keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    bad = [f"{k} {tuple(theirs[k].shape)} != {tuple(own[k].shape)}" for k in own
           if theirs[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: {what} shape mismatch (set the model sizes to the checkpoint's): "
                         f"{'; '.join(bad[:5])}")
    return {k: theirs[k] for k in own}


def hf_sizes(path: str) -> dict:
    """Dotted config overrides (model.text.*, model.video.*) read from a Hugging Face CLIP
    config.json in `path`, so the towers match the checkpoint they load."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    out = {}
    text = cfg.get("text_config", cfg if cfg.get("model_type") == "clip_text_model" else None)
    vision = cfg.get("vision_config", cfg if cfg.get("model_type") == "clip_vision_model" else None)
    if "projection_dim" in cfg:
        out["model.embed_dim"] = cfg["projection_dim"]
    for prefix, c in (("model.text.", text), ("model.video.", vision)):
        if not c:
            continue
        out[f"{prefix}width"] = c["hidden_size"]
        out[f"{prefix}depth"] = c["num_hidden_layers"]
        out[f"{prefix}heads"] = c["num_attention_heads"]
        out[f"{prefix}mlp_ratio"] = c["intermediate_size"] / c["hidden_size"]
        out[f"{prefix}act"] = "quick_gelu" if c.get("hidden_act", "quick_gelu") == "quick_gelu" else "gelu"
    if text:
        out["model.text.vocab_size"] = text["vocab_size"]
        out["model.text.context_length"] = text["max_position_embeddings"]
    if vision:
        out["model.video.patch_size"] = vision["patch_size"]
        out["model.video.image_size"] = vision["image_size"]
    return out
