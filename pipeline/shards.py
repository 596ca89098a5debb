"""Stage 8: globally shuffled WebDataset shards, written atomically and reproducibly.

Shuffling is done per *window* of videos (config shards.shuffle_window): all samples of
the window are permuted by a generator seeded with (seed, window) and dealt into shards of
near-equal size. A video's samples therefore land in many shards, and the order is a pure
function of the seed and the input. Tar headers are fixed (mtime 0, uid 0, mode 0644) so
the same samples give the same bytes. A shard is written to NAME.tar.tmp, fsynced and
renamed: a final name never holds a partial tar.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import re
import tarfile

from pipeline.config import ShardConfig
from schemas import Sample

_MEMBER = re.compile(r"^[A-Za-z0-9_-]+\.(json|mp4|txt)$")


def sample_json(sample: Sample) -> bytes:
    return json.dumps(dataclasses.asdict(sample), sort_keys=True, separators=(",", ":")).encode()


def sample_txt(sample: Sample) -> bytes:
    return "".join(u.text.replace("\n", " ") + "\n" for u in sample.units).encode()


def shard_name(cfg: ShardConfig, index: int) -> str:
    return f"{cfg.prefix}-{index:06d}.tar"


def plan_window(items: list[tuple[str, int]], seed: int, window: int, cfg: ShardConfig) -> list[list[str]]:
    """(key, bytes) of every sample in a window -> keys per shard, shuffled and balanced."""
    keys = sorted(items)                               # input order must not matter
    random.Random(f"tvts-shuffle:{seed}:{window}").shuffle(keys)
    total = sum(size for _, size in keys)
    n = max(1, math.ceil(len(keys) / cfg.max_samples), math.ceil(total / cfg.max_bytes))
    n = min(n, max(1, len(keys)))
    return [[k for k, _ in keys[j * len(keys) // n:(j + 1) * len(keys) // n]] for j in range(n)]


def check_member_name(name: str) -> str:
    """Member names are KEY.ext with a safe key: no paths, no '..', nothing absolute."""
    if not _MEMBER.match(name):
        raise ValueError(f"unsafe tar member name {name!r}")
    return name


def write_shard(path: str, members: list[tuple[str, bytes | str]]) -> int:
    """Write (name, bytes or a file path) members to `path` atomically; returns the tar's size.

    File members are streamed from disk, so a shard is never held whole in memory.
    """
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(check_member_name(name))
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
                if isinstance(data, str):
                    info.size = os.path.getsize(data)
                    with open(data, "rb") as src:
                        tar.addfile(info, src)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")
    return os.path.getsize(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_shard(path: str) -> dict[str, dict[str, bytes]]:
    """All samples of a shard as {key: {ext: bytes}}, rejecting unsafe member names."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if not m.isfile():
                raise ValueError(f"{path}: member {m.name!r} is not a regular file")
            key, ext = check_member_name(m.name).split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out
