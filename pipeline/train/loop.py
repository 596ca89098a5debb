"""The training loop: one plain function, read top to bottom.

    train(cfg, batches_factory) -> final metrics

`batches_factory(rank=r, world_size=w)` returns an iterable of batch dicts (the loader's batch
contract, see pipeline/train/__init__.py). If the iterable has `state_dict()` /
`load_state_dict(state)`, its state goes into every checkpoint (`loader_state`) and is restored
before iteration on resume; state_dict() must describe the batches handed out so far.
A finite iterable is restarted (next epoch) when it runs out.

Distributed use (Ray Train, see ray_train.py) passes rank, world_size, device, a wrap_model
(DDP) and a report function; a local run needs none of them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist

from pipeline import storage
from pipeline.train.config import TrainConfig
from pipeline.train.model import TVTSModel, count_params, cosine_lr, param_groups

CKPT_NAME = "last.pt"


class DataError(RuntimeError):
    """The data source cannot deliver batches (no shards, no loader)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32. Mixed precision runs on CUDA only."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to the device (tube_mask stays on the host: the model does index maths there).
    A tensor already on a GPU (frames decoded there, loader.decode_device=cuda) is left as is."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and k != "tube_mask" and not v.is_cuda:
            if device.type == "cuda" and not v.is_pinned():
                v = v.pin_memory()
            v = v.to(device, non_blocking=True)
        out[k] = v
    return out


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_objects(obj) -> list:
    """Every rank's obj, on every rank (a list of one without torch.distributed)."""
    if _world()[1] == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(t)
    return t


def _next_batch(it, data):
    """(batch, iterator): restarts a finite iterable once; an empty one raises."""
    try:
        return next(it), it
    except StopIteration:
        it = iter(data)
        try:
            return next(it), it
        except StopIteration:
            stats = getattr(data, "stats", None)
            raise DataError("the data source yields no batches"
                               + (f" (loader: {dict(stats)})" if isinstance(stats, dict) else "")) from None


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)                  # atomic: a crash mid-save leaves the previous one


def build_model(cfg: TrainConfig) -> TVTSModel:
    """The model as train() initialises it: seeded with cfg.seed, so every rank starts equal."""
    torch.manual_seed(cfg.seed)
    return TVTSModel(cfg.model)


def load_model(path: str | Path, cfg: TrainConfig | None = None) -> TVTSModel:
    """A model from a checkpoint written by train() (its own config unless cfg is given)."""
    from pipeline.train.config import config_from_dict
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = cfg or config_from_dict(ckpt["config"])
    cfg.model.text.pretrained = ""         # the checkpoint holds the weights
    model = TVTSModel(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model


@torch.no_grad()
def evaluate(model: TVTSModel, batches: Iterable[dict], max_batches: int, device: torch.device | str = "cpu") -> dict:
    """Sorting metrics of `model` (eval mode) over up to max_batches batches."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    K = model.units
    w = _new_window(K, device)
    for i, batch in enumerate(batches):
        if i == max_batches:
            break
        res = model(to_device(batch, device))
        w["loss"] += res["loss"]
        for key in ("sort_loss", "contrastive_loss", "n", "exact", "correct_by_pos"):
            w[key] += res[key]
        w["steps"] += 1
    model.train(was_training)
    m = _window_metrics(w, 1)
    for key in ("samples_per_s", "data_wait_frac", "step_time_s"):
        m.pop(key)
    return m


def train(cfg: TrainConfig, batches_factory: Callable[..., Iterable[dict]], *,
          rank: int | None = None, world_size: int | None = None, device: torch.device | str | None = None,
          wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
          report: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None,
          until: int | None = None) -> dict:
    """Train up to cfg.steps optimizer steps (resuming from cfg.out/ckpt/last.pt when cfg.resume).

    `until`: stop (with a checkpoint) at this step, keeping the LR schedule of cfg.steps, as a
    preempted job would; a later call resumes from there.

    Returns the final metrics: loss, sort_loss, contrastive_loss, exact_acc, position_acc,
    position_acc_by_pos (over the last log window), samples_per_s and data_wait_frac (over the
    whole run), step, steps_run, history (per-step loss of the steps this call ran).
    """
    # ---- setup: ranks, device, precision, seeds
    if rank is None or world_size is None:
        rank, world_size = _world()
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    amp_dtype = resolve_amp(cfg.amp, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)        # plain "cuda" (NCCL, a GPU-decoding loader) = this one
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    is_main = rank == 0
    # a remote --out (s3://...): work in a local cache, upload checkpoints and logs after each
    # save, so every rank of a multi-node run can resume from object storage
    remote = cfg.out if storage.is_remote(cfg.out) else ""
    out = Path(os.path.expanduser("~/.cache/tvts-train")) / hashlib.sha1(remote.encode()).hexdigest()[:16] \
        if remote else Path(cfg.out)
    log = log or (lambda line: None)

    model = build_model(cfg).to(device)
    groups = param_groups(model, cfg.optim.lr, cfg.optim.pretrained_lr, cfg.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr(s, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # the trainer's own random draws (dropout, a tube mask when the batch has none) differ per rank
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    data = batches_factory(rank=rank, world_size=world_size)

    # ---- resume
    step = 0
    ckpt_path = out / "ckpt" / CKPT_NAME
    if remote and cfg.resume and storage.exists(storage.join(remote, "ckpt", CKPT_NAME)):
        storage.download(storage.join(remote, "ckpt", CKPT_NAME), str(ckpt_path))
    if cfg.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step = ckpt["step"]
        same_world = ckpt.get("world_size") == world_size
        if same_world:
            set_rng_state(ckpt["rng_states"][rank])
        loader_state = ckpt["loader_states"][rank] if same_world else None
        if loader_state is not None and hasattr(data, "load_state_dict"):
            data.load_state_dict(loader_state)
        elif hasattr(data, "load_state_dict"):
            log(json.dumps({"event": "warning", "message": f"checkpoint of {ckpt.get('world_size')} "
                            f"ranks, now {world_size}: data order and RNG start afresh"}))
        if is_main:
            log(json.dumps({"event": "resume", "path": str(ckpt_path), "step": step}))
        del ckpt

    raw_model = model
    if wrap_model is not None:
        model = wrap_model(model)          # DDP (Ray Train's prepare_model)
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    model.train()
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log(json.dumps({"event": "start", "step": step, "steps": cfg.steps, "device": str(device),
                        "amp": str(amp_dtype), "world_size": world_size, **count_params(raw_model)}))

    # ---- the loop
    stop = cfg.steps if until is None else min(until, cfg.steps)
    it = iter(data)
    K = cfg.model.units
    history: list[float] = []
    window = _new_window(K, device)
    total_time = total_wait = 0.0
    total_samples = 0
    last: dict = {}
    start_step = step
    t_step = time.perf_counter()
    while step < stop:
        wait = 0.0
        step_loss = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            t0 = time.perf_counter()
            batch, it = _next_batch(it, data)
            wait += time.perf_counter() - t0
            batch = to_device(batch, device)
            sync = contextlib.nullcontext() if not ddp or micro == cfg.grad_accum - 1 else model.no_sync()
            with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                res = model(batch)
                loss = res["loss"] / cfg.grad_accum
            scaler.scale(loss).backward()
            step_loss += loss.detach()
            for key in ("sort_loss", "contrastive_loss"):
                window[key] += res[key] / cfg.grad_accum
            for key in ("n", "exact", "correct_by_pos"):
                window[key] += res[key]
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1

        # timing without a device sync: a step is the wall time from one step's start to the next
        now = time.perf_counter()
        step_time, t_step = now - t_step, now
        window["loss"] += step_loss
        window["losses"].append(step_loss)
        window["time"] += step_time
        window["wait"] += wait
        window["steps"] += 1
        total_time += step_time
        total_wait += wait
        total_samples += cfg.batch_size * cfg.grad_accum * world_size

        if step % cfg.log_every == 0 or step == stop:
            history.extend(torch.stack(window["losses"]).cpu().tolist())
            last = _window_metrics(window, world_size)
            last.update(step=step, lr=scheduler.get_last_lr()[0])
            if isinstance(getattr(data, "stats", None), dict):      # e.g. the loader's skipped samples
                last["loader"] = dict(data.stats)
            if is_main:
                line = json.dumps({"event": "log", **last})
                log(line)
                with open(out / "log.jsonl", "a") as f:
                    f.write(line + "\n")
            if report is not None:
                report(dict(last))
            window = _new_window(K, device)
        if step == stop or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
            # every rank takes part (gathers); rank 0 writes
            src = data if hasattr(data, "state_dict") else it
            loader_states = _gather_objects(src.state_dict() if hasattr(src, "state_dict") else None)
            rng_states = _gather_objects(rng_state())
            if is_main:
                save_checkpoint(ckpt_path, {
                    "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                    "world_size": world_size, "rng_states": rng_states, "loader_state": loader_states[0],
                    "loader_states": loader_states, "config": cfg.to_dict()})
                if remote:
                    for rel in ("ckpt/" + CKPT_NAME, "log.jsonl", "config.json"):
                        if (out / rel).exists():
                            storage.upload(str(out / rel), storage.join(remote, *rel.split("/")))

    final = dict(last)
    final.update(step=step, steps_run=step - start_step,
                 samples_per_s=total_samples / total_time if total_time else 0.0,
                 data_wait_frac=total_wait / total_time if total_time else 0.0,
                 history=history)
    if is_main:
        log(json.dumps({"event": "end", **{k: v for k, v in final.items() if k != "history"}}))
    return final


def _new_window(K: int, device: torch.device) -> dict:
    z = lambda: torch.zeros((), device=device)                      # noqa: E731
    return {"loss": z(), "sort_loss": z(), "contrastive_loss": z(), "n": z(), "exact": z(),
            "correct_by_pos": torch.zeros(K, device=device), "losses": [], "time": 0.0, "wait": 0.0,
            "steps": 0}


def _window_metrics(w: dict, world_size: int) -> dict:
    """Averages over the window's steps and over all ranks (one all_reduce)."""
    packed = torch.cat([torch.stack([w["loss"], w["sort_loss"], w["contrastive_loss"], w["n"], w["exact"]]),
                        w["correct_by_pos"]]).float()
    loss, sort_loss, con_loss, n, exact, *by_pos = _all_reduce_sum(packed).cpu().tolist()
    per_step = w["steps"] * world_size
    n = max(n, 1.0)                       # global samples of the window; each has every position once
    return {"loss": loss / per_step, "sort_loss": sort_loss / per_step, "contrastive_loss": con_loss / per_step,
            "exact_acc": exact / n, "position_acc": sum(by_pos) / (n * len(by_pos)),
            "position_acc_by_pos": [c / n for c in by_pos],
            "samples_per_s": n / w["time"] if w["time"] else 0.0,
            "data_wait_frac": w["wait"] / w["time"] if w["time"] else 0.0,
            "step_time_s": w["time"] / w["steps"]}
