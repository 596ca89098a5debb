"""The trainer on real torch: it learns to sort, keeps frozen text layers frozen, resumes exactly,
and runs under Ray Train with two CPU workers.

The data is pipeline.train.synthetic: each unit's frames are one solid colour and its transcript
names the colour, shuffled, so the order is visible in the video. Chance for exact order at K=4
is 1/24. Measured on 2 CPU cores, 1 torch thread, this exact 400-step config: the sort loss sits
at ln 4 for 130-280 steps, then falls; held-out exact-order accuracy 0.95 with seed 0 (the one
tested) and 1.0 with each of seeds 1-6. The run takes 20-35 s here; the test asserts >= 0.6.
"""
import functools
import json
import math

import pytest
import torch

from pipeline.train import (ColourSortBatches, build_model, evaluate, load_model, load_train_config,
                            main, train, train_ray)
from pipeline.train.model import TVTSModel, VideoEncoder, param_groups
from pipeline.train.synthetic import COLOURS, factory_for

K = 4
SIX = dict(list(COLOURS.items())[:6])          # 6 colours: the task is learnt sooner than with 12


def tiny(tmp, **overrides):
    base = {"out": str(tmp), "threads": 1, "model.video.mask_ratio": 0.75, "log_every": 50}
    return load_train_config(preset="tiny", overrides={**base, **overrides})


def source(cfg, **kw):
    return factory_for(cfg, colours=SIX, text_len=10, **kw)


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 400-step run shared by the learning and the frozen-layer tests."""
    n = torch.get_num_threads()
    cfg = tiny(tmp_path_factory.mktemp("learn"), steps=400)
    final = train(cfg, source(cfg))
    torch.set_num_threads(n)
    return cfg, final


# ----------------------------------------------------------------------------- learning

def test_sorting_is_learnt(trained):
    cfg, final = trained
    assert final["step"] == 400 and len(final["history"]) == 400
    assert math.log(K) * cfg.model.sort_weight < final["history"][0]          # starts at chance
    model = load_model(f"{cfg.out}/ckpt/last.pt")
    held_out = ColourSortBatches(32, image_size=32, patch_size=8, text_len=10, mask_ratio=0.75,
                                 colours=SIX, seed=12345)
    m = evaluate(model, held_out, max_batches=4)
    print(json.dumps({"held_out": m, "train_window": {k: final[k] for k in ("exact_acc", "position_acc")}}))
    assert m["exact_acc"] >= 0.6, m                  # chance: 1/24 = 0.042
    assert m["position_acc"] >= 0.8, m               # chance: 0.25
    assert final["exact_acc"] >= 0.5                 # the training window agrees
    assert 0.0 <= final["data_wait_frac"] < 1.0 and final["samples_per_s"] > 0
    log = [json.loads(line) for line in open(f"{cfg.out}/log.jsonl")]
    assert [d["step"] for d in log] == list(range(50, 401, 50))


def test_frozen_text_layers_unchanged(trained):
    cfg, _ = trained
    before = build_model(cfg).text.state_dict()
    after = load_model(f"{cfg.out}/ckpt/last.pt").text.state_dict()
    f = cfg.model.text.frozen_layers
    frozen = [k for k in before if k.startswith(("token_embedding", "positional_embedding"))
              or any(k.startswith(f"transformer.resblocks.{i}.") for i in range(f))]
    trained_keys = [k for k in before if k not in frozen]
    assert frozen and trained_keys
    for k in frozen:
        assert torch.equal(before[k], after[k]), f"frozen {k} changed"
    changed = [k for k in trained_keys if not torch.equal(before[k], after[k])]
    assert changed == trained_keys, f"unchanged trainable text weights: {set(trained_keys) - set(changed)}"


def test_frozen_parts_take_no_gradient_and_stay_in_eval():
    cfg = load_train_config(preset="tiny")
    cfg.model.dropout = 0.1
    model = TVTSModel(cfg.model).train()
    text = model.text
    assert not text.token_embedding.weight.requires_grad and not text.positional_embedding.requires_grad
    assert all(not p.requires_grad for p in text.transformer.resblocks[0].parameters())
    assert all(p.requires_grad for p in text.transformer.resblocks[1].parameters())
    assert not text.transformer.resblocks[0].training and text.transformer.resblocks[1].training
    names = {n for g in param_groups(model, 1e-3, 1e-7, 0.01) for p in g["params"] for n, q in
             model.named_parameters() if q is p}
    assert not any(n.startswith("text.transformer.resblocks.0.") for n in names)


# ----------------------------------------------------------------------------- resume

def test_resume_is_exact(tmp_path):
    """N steps straight == N/2, stop, resume in a fresh model/optimizer/RNG, N/2 more.

    Dropout and trainer-drawn tube masks make the RNG matter; grad accumulation makes the data
    position (2 batches a step) matter."""
    over = {"steps": 12, "grad_accum": 2, "batch_size": 4, "model.dropout": 0.1, "log_every": 5,
            "model.video.mask_ratio": 0.5}
    cfg_a = tiny(tmp_path / "straight", **over)
    straight = train(cfg_a, source(cfg_a, with_tube_mask=False))["history"]

    cfg_b = tiny(tmp_path / "split", **over)
    first = train(cfg_b, source(cfg_b, with_tube_mask=False), until=6)
    ckpt = torch.load(tmp_path / "split" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["step"] == 6 and ckpt["loader_state"]["next"] == 12
    torch.manual_seed(999)                                         # a different process state
    import random
    random.seed(999)
    second = train(cfg_b, source(cfg_b, with_tube_mask=False))
    assert second["steps_run"] == 6 and second["step"] == 12
    assert len(straight) == 12
    assert first["history"] + second["history"] == straight        # bitwise equal floats


# ----------------------------------------------------------------------------- model pieces

@pytest.mark.parametrize("attention", ["joint", "divided"])
def test_dropped_patches_are_never_seen(attention):
    cfg = load_train_config(preset="tiny", overrides={"model.video.attention": attention})
    torch.manual_seed(0)
    enc = VideoEncoder(cfg.model.video, num_frames=12, embed_dim=16).eval()
    for name, p in enc.named_parameters():
        if "timeattn" in name:            # as after training: the temporal path is not a no-op
            torch.nn.init.normal_(p, std=0.2)
    video = torch.randint(0, 256, (2, 12, 3, 32, 32), dtype=torch.uint8)
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0, [0, 5, 6, 15]] = True
    keep[1, [1, 2, 3, 4, 9, 10]] = True                             # unequal counts: padded path
    tokens, valid, cls = enc(video, keep)
    assert tokens.shape == (2, 1 + 12 * 6, 64) and valid.sum(1).tolist() == [1 + 12 * 4, 1 + 12 * 6]
    other = video.clone()
    other[0, :, :, 8:16, 8:16] = 0                                  # patch 5 of sample 0 (kept)
    other[1, :, :, 0:8, 0:8] = 255                                  # patch 0 of sample 1 (dropped)
    _, _, cls2 = enc(other, keep)
    assert not torch.allclose(cls[0], cls2[0]) and torch.allclose(cls[1], cls2[1], atol=1e-6)
    # a sample alone (no padding) gives what it gave in the padded batch
    _, _, alone = enc(video[:1], keep[:1])
    assert torch.allclose(alone[0], cls[0], atol=1e-5)
    # everything kept == no mask
    _, _, full = enc(video, torch.ones(2, 16, dtype=torch.bool))
    _, _, none = enc(video, None)
    assert torch.equal(full, none)


def test_pretrained_text_weights_load(tmp_path):
    cfg = load_train_config(preset="tiny")
    src = TVTSModel(cfg.model)
    path = tmp_path / "text.pt"
    # as a wrapper would save it: prefixed keys, other towers' keys alongside
    torch.save({"state_dict": {**{f"text.{k}": v for k, v in src.text.state_dict().items()},
                               "visual.proj": torch.zeros(3), "logit_scale": torch.ones(())}}, path)
    cfg.model.text.pretrained = str(path)
    torch.manual_seed(123)
    model = TVTSModel(cfg.model)
    for k, v in src.text.state_dict().items():
        assert torch.equal(model.text.state_dict()[k], v)
    groups = param_groups(model, 1e-4, 1e-7, 0.05)
    text_ids = {id(p) for p in model.text.parameters()}
    for g in groups:
        assert all((id(p) in text_ids) == (g["lr"] == 1e-7) for p in g["params"])
    torch.save({"token_embedding.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="missing text-tower keys"):
        TVTSModel(cfg.model)


def test_stand_in_samples_are_left_out():
    """Rows with valid=False (the loader's stand-ins for unusable samples) change no loss."""
    cfg = load_train_config(preset="tiny")
    torch.manual_seed(0)
    model = TVTSModel(cfg.model).eval()
    batch = next(iter(ColourSortBatches(6, image_size=32, patch_size=8, text_len=10)))
    full = model(batch)
    valid = torch.tensor([True, True, True, True, False, False])
    junk = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    junk["video"][4:] = 0
    junk["order"][4:] = torch.arange(K)
    masked = model({**junk, "valid": valid})
    first4 = model({k: v[:4] for k, v in batch.items()})
    for key in ("sort_loss", "contrastive_loss", "n", "exact"):
        assert torch.allclose(masked[key], first4[key], atol=1e-5), key
    assert masked["n"] == 4 and full["n"] == 6
    none = model({**junk, "valid": torch.zeros(6, dtype=torch.bool)})
    assert torch.isfinite(none["loss"]) and none["n"] == 0


def _infonce_rank(rank, store, a, b, valid, q):
    import torch.distributed as dist
    from pipeline.train.model import info_nce
    # a file rendezvous: no free-port race with other processes on the machine
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    rows = slice(rank * 4, rank * 4 + 4)
    a, b = a[rows].clone().requires_grad_(), b[rows].clone().requires_grad_()
    loss = info_nce(a, b, 0.05, True, valid[rows])
    loss.backward()
    # numpy arrays pickle by value; torch tensors would be shared through this process's
    # file descriptors, which are gone if it exits before the parent reads the queue
    q.put((rank, loss.item(), a.grad.numpy(), b.grad.numpy()))
    dist.destroy_process_group()


def test_gathered_infonce_gradient_is_exact(tmp_path):
    """InfoNCE over 2 gloo ranks: the same loss as one process over the whole batch, and after
    DDP's mean over ranks, the same gradient."""
    import torch.multiprocessing as mp
    from pipeline.train.model import info_nce
    torch.manual_seed(0)
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    valid = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    ra, rb = a.clone().requires_grad_(), b.clone().requires_grad_()
    ref = info_nce(ra, rb, 0.05, True, valid)
    ref.backward()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    store = tmp_path / "rendezvous"
    procs = [ctx.Process(target=_infonce_rank, args=(r, store, a, b, valid, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = sorted([q.get(timeout=120) for _ in procs], key=lambda x: x[0])   # never hang on a dead rank
    for p in procs:
        p.join(30)
    assert all(abs(loss - ref.item()) < 1e-5 for _, loss, _, _ in res)
    world = 2          # DDP averages each parameter's gradient over the ranks
    assert torch.allclose(torch.cat([torch.from_numpy(r[2]) for r in res]) / world, ra.grad, atol=1e-6)
    assert torch.allclose(torch.cat([torch.from_numpy(r[3]) for r in res]) / world, rb.grad, atol=1e-6)


# ----------------------------------------------------------------------------- CLI and Ray

def test_cli_synthetic(tmp_path, capsys):
    rc = main(["train", "--synthetic", "--preset", "tiny", "--steps", "3", "--out", str(tmp_path),
               "--batch-size", "4", "--threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("loss", "exact_acc", "position_acc", "samples_per_s", "data_wait_frac"):
        assert key in out
    assert out["step"] == 3 and (tmp_path / "ckpt" / "last.pt").exists()
    # a rerun resumes: nothing left to do
    main(["--synthetic", "--preset", "tiny", "--steps", "3", "--out", str(tmp_path), "--batch-size", "4"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps_run"] == 0


def test_ray_train_two_cpu_workers(tmp_path, ray_local):
    cfg = tiny(tmp_path / "out", steps=4, batch_size=4, log_every=2)
    result = train_ray(cfg, functools.partial(ColourSortBatches, 4, image_size=32, patch_size=8,
                                              text_len=10, mask_ratio=0.75, colours=SIX),
                       num_workers=2, use_gpu=False)
    ranks = sorted(result["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["step"] == 4 and r["steps_run"] == 4 for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]             # DDP kept the replicas equal
    ckpt = torch.load(tmp_path / "out" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and [s["rank"] for s in ckpt["loader_states"]] == [0, 1]
    assert [s["next"] for s in ckpt["loader_states"]] == [4, 4]
