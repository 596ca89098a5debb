"""Pretrained CLIP weights: our towers, loaded from a Hugging Face CLIP checkpoint directory or an
OpenAI/OpenCLIP-layout file, compute what the reference implementation (transformers' CLIP)
computes on the same inputs.

The checkpoints are small random-init CLIP models saved by transformers itself (no hub access):
the key names, the q/k/v split and the projection layout are those of real CLIP checkpoints.
Tolerance: float32, 2 layers; the towers agree to 1e-5 relative to their output scale.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from pipeline.train import load_train_config
from pipeline.train.config import TextConfig, VideoConfig
from pipeline.train.model import PIXEL_STATS, TextEncoder, TVTSModel, VideoEncoder, param_groups
from pipeline.train.weights import hf_sizes, image_state, read_checkpoint, text_state

VOCAB, CTX, EMBED = 99, 16, 24
BOS, EOS = 97, 98


def hf_text_config():
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=CTX, projection_dim=EMBED,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0)


def hf_vision_config(image_size=32):
    return transformers.CLIPVisionConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=8, projection_dim=EMBED)


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """A CLIPModel (both towers) saved as a Hugging Face checkpoint directory."""
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(text_config=hf_text_config().to_dict(),
                                  vision_config=hf_vision_config().to_dict(), projection_dim=EMBED)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():                 # LayerNorms start at 1/0: make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(path)
    return model, str(path)


def token_batch(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, CTX, dtype=torch.long)
    mask = torch.zeros(n, CTX, dtype=torch.bool)
    for i in range(n):
        length = 3 + i * 2                       # bos, words, eos; the rest padding
        ids[i, :length] = torch.randint(1, BOS, (length,), generator=g)
        ids[i, 0], ids[i, length - 1] = BOS, EOS
        mask[i, :length] = True
    return ids, mask


def our_text(path, sizes):
    cfg = TextConfig(vocab_size=sizes["model.text.vocab_size"], context_length=sizes["model.text.context_length"],
                     width=sizes["model.text.width"], depth=sizes["model.text.depth"],
                     heads=sizes["model.text.heads"], mlp_ratio=sizes["model.text.mlp_ratio"],
                     act=sizes["model.text.act"], frozen_layers=1)
    enc = TextEncoder(cfg, sizes["model.embed_dim"]).eval()
    enc.load_pretrained(path)
    return enc


def pixels(video):
    """What transformers' CLIP takes: float, /255, CLIP mean/std."""
    mean, std = (torch.tensor(x).view(1, 3, 1, 1) for x in PIXEL_STATS["clip"])
    return (video.float() / 255 - mean) / std


def our_video(path, frames=1, tubelet=1, image_size=32, attention="divided"):
    cfg = VideoConfig(image_size=image_size, patch_size=8, tubelet=tubelet, width=48, depth=2, heads=4,
                      mlp_ratio=2.0, norm="clip", act="quick_gelu", attention=attention)
    enc = VideoEncoder(cfg, num_frames=frames, embed_dim=EMBED).eval()
    enc.load_pretrained(path)
    return enc


def test_text_tower_matches_transformers(hf_clip):
    model, path = hf_clip
    sizes = hf_sizes(path)
    assert sizes["model.text.width"] == 32 and sizes["model.text.act"] == "quick_gelu"
    enc = our_text(path, sizes)
    ids, mask = token_batch()
    with torch.no_grad():
        want = model.get_text_features(input_ids=ids, attention_mask=mask.long())
        want = getattr(want, "pooler_output", want)          # a tensor, or an output object
        got = enc(ids, mask)
    assert got.shape == want.shape == (5, EMBED)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_image_tower_matches_transformers(hf_clip, attention):
    """One frame, no masking: the video encoder IS the CLIP image tower (the divided block's
    temporal branch starts at exactly zero)."""
    model, path = hf_clip
    enc = our_video(path, attention=attention)
    video = torch.randint(0, 256, (3, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = model.get_image_features(pixel_values=pixels(video[:, 0]))
        want = getattr(want, "pooler_output", want)
        _, _, got = enc(video, None)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item()), (got - want).abs().max()


def test_inflated_tubelet_and_resized_grid(hf_clip):
    """A tubelet of 2 identical frames embeds as the image (the filter is split over time); at
    another image size the position grid is resized and the tower still runs."""
    model, path = hf_clip
    enc = our_video(path, frames=2, tubelet=2)
    image = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = model.get_image_features(pixel_values=pixels(image[:, 0]))
        want = getattr(want, "pooler_output", want)
        _, _, got = enc(image.expand(2, 2, 3, 32, 32).contiguous(), None)
    assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item())
    big = our_video(path, frames=4, image_size=48)
    assert big.pos_spatial.shape == (36, 48)
    tokens, _, _ = big(torch.randint(0, 256, (1, 4, 3, 48, 48), dtype=torch.uint8),
                       torch.ones(1, 36, dtype=torch.bool))
    assert tokens.shape == (1, 1 + 4 * 36, 48) and torch.isfinite(tokens).all()


def test_openai_layout_file_loads_the_same(hf_clip, tmp_path):
    """The same weights in OpenAI/OpenCLIP names (top-level text keys, `visual.*`), as one torch
    file with a wrapper prefix, give the same towers."""
    _, path = hf_clip
    state = read_checkpoint(path)
    openai = {**text_state(state), **{f"visual.{k}": v for k, v in image_state(state).items()},
              "logit_scale": torch.ones(())}
    torch.save({"state_dict": {f"module.{k}": v for k, v in openai.items()}}, tmp_path / "clip.pt")
    sizes = hf_sizes(path)
    a, b = our_text(path, sizes), our_text(str(tmp_path / "clip.pt"), sizes)
    ids, mask = token_batch()
    with torch.no_grad():
        assert torch.equal(a(ids, mask), b(ids, mask))
    va, vb = our_video(path, frames=3), our_video(str(tmp_path / "clip.pt"), frames=3)
    video = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(va(video, None)[2], vb(video, None)[2])


def test_model_from_clip_directory(hf_clip, tmp_path):
    """TVTSModel with both towers from one HF directory: the recipe's learning rates (CLIP weights
    at pretrained_lr, new modules at lr), the text rule (shallow blocks frozen), and training
    moves the temporal attention away from its zero start."""
    _, path = hf_clip
    over = {**hf_sizes(path), "model.video.attention": "divided", "model.video.norm": "clip",
            "model.video.pretrained": path, "model.text.pretrained": path, "model.text.frozen_layers": 2,
            "model.video.mask_ratio": 0.5}
    over.pop("model.video.image_size")
    cfg = load_train_config(preset="tiny", overrides=over)
    torch.manual_seed(0)
    model = TVTSModel(cfg.model)
    groups = param_groups(model, 1e-4, 1e-7, 0.05)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert lr[id(names["video.transformer.resblocks.0.attn.in_proj_weight"])] == 1e-7
    assert lr[id(names["video.cls_token"])] == 1e-7
    assert lr[id(names["video.transformer.resblocks.0.timeattn.in_proj_weight"])] == 1e-4
    assert lr[id(names["video.pos_temporal"])] == 1e-4
    assert lr[id(names["head.classifier.weight"])] == 1e-4
    assert lr[id(names["text.transformer.resblocks.2.attn.in_proj_weight"])] == 1e-7
    assert id(names["text.transformer.resblocks.1.attn.in_proj_weight"]) not in lr     # frozen
    from pipeline.train.synthetic import ColourSortBatches
    batches = iter(ColourSortBatches(4, image_size=32, patch_size=8, text_len=10))
    opt = torch.optim.AdamW([{**g, "lr": 1e-3} for g in groups])
    before = names["video.transformer.resblocks.0.timeattn.in_proj_weight"].detach().clone()
    for _ in range(3):
        batch = next(batches)
        batch["text_ids"] = batch["text_ids"] % VOCAB           # byte ids -> this tiny vocab
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert torch.isfinite(out["loss"])
    assert not torch.equal(before, names["video.transformer.resblocks.0.timeattn.in_proj_weight"])


def test_wrong_sizes_say_what_to_set(hf_clip):
    _, path = hf_clip
    cfg = TextConfig(vocab_size=VOCAB, context_length=CTX, width=64, depth=3, heads=4, act="quick_gelu")
    with pytest.raises(ValueError, match="text-tower shape mismatch"):
        TextEncoder(cfg, EMBED).load_pretrained(path)
    with pytest.raises(FileNotFoundError, match="local paths only"):
        TextEncoder(cfg, EMBED).load_pretrained(path + "-missing")
