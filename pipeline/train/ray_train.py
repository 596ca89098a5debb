"""The same training function under Ray Train: N workers, CPU or GPU, DDP.

    train_ray(cfg, batches_factory, num_workers=2, use_gpu=False) -> final metrics of rank 0

Each worker builds its own data with batches_factory(rank=world_rank, world_size=N) (so the
factory must be picklable: a functools.partial or a module-level function, as the ones in
pipeline.train.synthetic and pipeline.train.data), wraps the model with
ray.train.torch.prepare_model (DDP; gloo on CPU, NCCL on GPU) and runs pipeline.train.loop.train.
Rank 0 writes checkpoints to cfg.out, which must be storage every worker sees (one node, or a
shared filesystem); a restarted run resumes from it like a local one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pipeline.train.config import TrainConfig


def _checksum(model) -> float:
    import torch
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def _worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from pipeline.train.config import config_from_dict
    from pipeline.train.loop import train

    cfg = config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    models = []

    def wrap(model):
        models.append(model)
        # every trainable parameter gets a gradient each step unless a loss is switched off
        unused = cfg.model.contrastive_weight == 0 or cfg.model.sort_weight == 0
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": unused})

    def log(line: str) -> None:
        print(line, flush=True)

    final = train(cfg, config["factory"], rank=rank, world_size=world,
                  device=ray.train.torch.get_device(), wrap_model=wrap, report=ray.train.report, log=log)
    # what every rank did, so the driver can check that they agree
    import torch.distributed as dist
    mine = {"rank": rank, "step": final["step"], "steps_run": final["steps_run"],
            "checksum": _checksum(models[0])}
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    final.pop("history", None)
    metrics = {**final, "final": True, "ranks": everyone, "torch_threads": torch.get_num_threads()}
    # Ray Train keeps rank 0's metrics with a checkpoint: a small one that points at ours
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            with open(os.path.join(tmp, "final.json"), "w") as f:
                json.dump({**metrics, "checkpoint": str(Path(cfg.out) / "ckpt" / "last.pt")}, f)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_ray(cfg: TrainConfig, batches_factory, *, num_workers: int = 2, use_gpu: bool = False,
              cpus_per_worker: float = 1.0, storage_path: str | None = None, name: str = "tvts-train") -> dict:
    """Run pipeline.train.loop.train on `num_workers` Ray Train workers; returns rank 0's final
    metrics plus `ranks`: [{rank, step, steps_run, checksum}] of every worker. Uses the Ray
    instance already initialised, or starts a local one."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg_dict = cfg.to_dict()
    cfg_dict["out"] = str(Path(cfg.out).resolve())     # workers need not share the driver's cwd
    storage = storage_path or os.path.join(cfg_dict["out"], "ray")
    os.makedirs(storage, exist_ok=True)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": cfg_dict, "factory": batches_factory},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return dict(result.metrics or {})
