"""Clips/s of one CPU worker: pipeline.loader vs a naive webdataset + decord loop.

Both read the same shards, take the same frames (evaluation mode: the centre of each of F
bins per unit, so the frames are identical and the script checks that they are), crop/resize
and tokenise the same way and build the same batch. They differ in decoding only:

  loader  seeks: decord.get_batch on the K*F wanted frames (a keyframe every second, so each
          frame costs one seek plus at most a second of decoding)
  naive   webdataset's tar reader, then decodes the whole clip front to back with vr.next()
          (the faster of the two naive ways; `--naive-batch` also times vr.get_batch(all))

Without --shards it writes a shard set like the build's: 456x256 clips, 30 fps, libx264
veryfast crf 23, keyframe every second, K=4 units of 4 s with 1 s gaps (the TVTS recipe).
    python bench/bench_loader.py                      # 24 clips x 2 rounds, ~2 minutes on 2 cores
    python bench/bench_loader.py --shards 'out/shard-*.tar' --clips 100

--decoders instead compares the decoding backends (pipeline.decode) on the same clips and the
same frame indices: ms per clip to decode the K*F frames, and to decode + crop/resize them,
for decord (CPU), torchcodec on the CPU and torchcodec on CUDA (NVDEC). A backend that cannot
run here prints "unavailable: <reason>".
    python bench/bench_loader.py --decoders --clips 24
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.decode import DECODERS, crop_resize, frame_indices, torchcodec_video_decoder  # noqa: E402
from pipeline.loader import LoaderConfig, ShardStream, expand_urls, open_url, read_units, tube_mask  # noqa: E402
from pipeline.shards import sample_json, sample_txt, write_shard  # noqa: E402
from pipeline.text import ByteTokenizer  # noqa: E402
from schemas import Sample, Unit, Word  # noqa: E402

FPS, W, H = 30, 456, 256
UNIT_S, GAP_S, K = 4.0, 1.0, 4


def make_shards(out: str, clips: int, shards: int, sources: int = 4) -> list[str]:
    os.makedirs(out, exist_ok=True)
    dur = K * UNIT_S + (K - 1) * GAP_S + 0.5
    src = []
    for v in range(sources):          # moving test pattern + grain: decodes like real footage
        path = os.path.join(out, f"src{v}.mp4")
        if not os.path.exists(path):
            subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i",
                            f"testsrc2=s={W}x{H}:r={FPS}:d={dur},hue=h={v * 70},noise=alls=4:allf=t",
                            "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                            "-g", str(FPS), "-an", path + ".tmp.mp4"], check=True)
            os.replace(path + ".tmp.mp4", path)
        src.append(path)
    paths = []
    per = -(-clips // shards)
    for j in range(shards):
        members = []
        for n in range(j * per, min(clips, (j + 1) * per)):
            units, t = [], 0.25
            for k in range(K):
                text = f"unit {k} of clip {n}: some words that were said here"
                units.append(Unit(text, t, t + UNIT_S, [Word(w, t, t + 0.3, 0.9) for w in text.split()]))
                t += UNIT_S + GAP_S
            s = Sample(1, f"c{n:05d}", f"v{n % sources}", "http://example.invalid", n, 0.0, dur, dur,
                       "en", 1.0, "bench", W, H, float(FPS), units)
            members += [(f"{s.key}.json", sample_json(s)), (f"{s.key}.mp4", src[n % sources]),
                        (f"{s.key}.txt", sample_txt(s))]
        path = os.path.join(out, f"shard-{j:06d}.tar")
        write_shard(path, members)
        paths.append(path)
    return paths


def run_loader(urls: list[str], cfg: LoaderConfig, clips: int):
    ds = ShardStream(urls, cfg)
    t0, c0, n, videos = time.perf_counter(), time.process_time(), 0, {}
    for batch in ds.batches(0):
        for b, key in enumerate(batch["keys"]):
            if batch["valid"][b] and key not in videos:
                videos[key] = batch["video"][b]
        n += len(batch["keys"])
        if n >= clips:
            break
    return n, time.perf_counter() - t0, time.process_time() - c0, videos


def run_naive(urls: list[str], cfg: LoaderConfig, clips: int, whole_batch: bool):
    """What one writes first: webdataset for the tar, decode everything, keep the wanted frames."""
    import decord
    import webdataset as wds
    tok = ByteTokenizer(cfg.text_len)
    N = (cfg.size // cfg.patch) ** 2
    t0, c0, n, videos, pending = time.perf_counter(), time.process_time(), 0, {}, []

    def collate(items):
        return {"video": torch.stack([v for v, *_ in items]), "text_ids": torch.stack([i for _, i, _, _ in items]),
                "text_mask": torch.stack([m for _, _, m, _ in items]), "tube_mask": torch.stack([t for *_, t in items])}

    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        units = json.loads(sample["json"])["units"][:cfg.units]
        rng = np.random.default_rng(n)
        vr = decord.VideoReader(io.BytesIO(sample["mp4"]), num_threads=cfg.decode_threads)
        if whole_batch:
            allf = vr.get_batch(list(range(len(vr)))).asnumpy()
            frames_all = list(allf)
        else:
            frames_all = [vr.next().asnumpy() for _ in range(len(vr))]
        idx = frame_indices([(u["start"], u["end"]) for u in units], vr.get_avg_fps(),
                            len(frames_all), cfg.frames_per_unit, None)
        frames = np.stack([frames_all[i] for i in idx])
        video = crop_resize(frames, cfg.size, rng, False).contiguous()
        order = rng.permutation(cfg.units)
        ids, mask = tok([units[o]["text"] for o in order])
        pending.append((video, ids, mask, torch.from_numpy(tube_mask(N, cfg.mask_ratio, rng))))
        videos[sample["__key__"]] = video
        n += 1
        if len(pending) == cfg.batch_size:
            collate(pending)
            pending = []
        if n >= clips:
            break
    return n, time.perf_counter() - t0, time.process_time() - c0, videos


def read_clips(urls: list[str], clips: int, units: int) -> list[tuple[str, list, bytes]]:
    """(key, unit spans, mp4 bytes) of the first `clips` samples of the shards, held in memory
    so that only decoding is timed."""
    out: list[tuple[str, list, bytes]] = []
    for url in urls:
        files: dict[str, dict[str, bytes]] = {}
        with open_url(url) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                if ext in ("json", "mp4"):
                    files.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, f in files.items():
            if len(out) < clips and "json" in f and "mp4" in f:
                out.append((key, [(u.start, u.end) for u in read_units(f["json"])[:units]], f["mp4"]))
    return out


def compare_decoders(urls: list[str], args) -> int:
    """ms/clip of each backend on the same clips and the same (evaluation) frame indices."""
    clips = read_clips(urls, args.clips, K)
    backends = [("decord", "cpu"), ("torchcodec", "cpu"), ("torchcodec", "cuda")]
    why: dict[tuple, str] = {}
    try:
        torchcodec_video_decoder()
    except ImportError as e:
        reason = str(e.__cause__ or e).splitlines()[0]
        why[("torchcodec", "cpu")] = why[("torchcodec", "cuda")] = f"torchcodec not importable ({reason})"
    if ("torchcodec", "cuda") not in why and not torch.cuda.is_available():
        why[("torchcodec", "cuda")] = "no CUDA device"
    live = [b for b in backends if b not in why]

    def run(name: str, device: str, resize: bool):
        """wall and CPU ms per clip; the indices and (resized) frames of each clip."""
        idx, out = {}, {}
        t0, c0 = time.perf_counter(), time.process_time()
        for key, spans, data in clips:
            i, frames = DECODERS[name](data, lambda fps, n: frame_indices(spans, fps, n, args.frames_per_unit),
                                       threads=args.threads, device=device)
            if resize:
                frames = crop_resize(frames, args.size, None, False)
            if device == "cuda":
                torch.cuda.synchronize()                  # time the work, not its launch
            idx[key], out[key] = i, frames
        n = len(clips)
        return (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000, idx, out

    for b in live:                                        # imports, CUDA context, page cache
        run(*b, True)
    times = {(b, r): [] for b in live for r in (False, True)}
    last = {}
    for _ in range(args.rounds):                          # interleaved, as above
        for b in live:
            for r in (False, True):
                ms, cpu, idx, out = run(*b, r)
                times[(b, r)].append((ms, cpu))
                last[(b, r)] = (idx, out)
    print(f"decoders: {len(clips)} clips  rounds: {args.rounds}  frames/clip: {K * args.frames_per_unit} "
          f"(evaluation indices)  size: {args.size}  threads: {args.threads}  cpus: {os.cpu_count()}  "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    ref_idx, ref = last[(("decord", "cpu"), False)]
    ok = True
    for b in backends:
        label = f"{b[0]} ({b[1]})"
        if b in why:
            print(f"{label:18s} unavailable: {why[b]}")
            continue
        (dec, dec_cpu), (both, both_cpu) = (np.median(times[(b, r)], axis=0) for r in (False, True))
        idx, out = last[(b, False)]
        same = idx == ref_idx
        diff = float(np.mean([(ref[k].float() - out[k].cpu().float()).abs().mean().item() for k in ref]))
        ok &= same
        print(f"{label:18s} decode {dec:6.1f} ms/clip ({dec_cpu:6.1f} CPU)  decode+crop/resize {both:6.1f} "
              f"ms/clip ({both_cpu:6.1f} CPU)  same indices as decord: {same}  mean |pixel diff|: {diff:.2f}")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", help="shard URLs (pattern/glob); default: generate a set")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "bench_loader_shards"),
                    help="where to generate shards (reused when present)")
    ap.add_argument("--clips", type=int, default=24, help="clips timed per loader")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames-per-unit", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="decord threads (1 = one core per worker)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are printed")
    ap.add_argument("--naive-batch", action="store_true", help="also time naive decode with get_batch(all)")
    ap.add_argument("--decoders", action="store_true", help="compare the decoding backends instead")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)          # one worker = one core, as in a DataLoader worker

    urls = expand_urls(args.shards) if args.shards else make_shards(args.out, args.clips, 4)
    if args.decoders:
        return compare_decoders(urls, args)
    cfg = LoaderConfig(batch_size=args.batch_size, size=args.size, frames_per_unit=args.frames_per_unit,
                       decode_threads=args.threads, train=False, shuffle=False, streams=1)
    train_cfg = LoaderConfig(**{**cfg.__dict__, "train": True})
    runs = {"loader (eval frames)": lambda: run_loader(urls, cfg, args.clips),
            "loader (train: jittered frames, random crop, flip)": lambda: run_loader(urls, train_cfg, args.clips),
            "naive: webdataset + decode all with vr.next()": lambda: run_naive(urls, cfg, args.clips, False)}
    if args.naive_batch:
        runs["naive: webdataset + decode all with get_batch(all)"] = lambda: run_naive(urls, cfg, args.clips, True)
    run_loader(urls, cfg, args.batch_size)                       # warm the page cache and imports
    # rounds interleave the contenders, so that load from other processes hits them alike;
    # CPU time (all threads of this process) is less sensitive to that load than wall time
    results: dict[str, list] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            results[name].append(fn())
    print(f"shards: {len(urls)}  clips per run: {args.clips}  rounds: {args.rounds}  frames/clip: "
          f"{K * args.frames_per_unit}  size: {args.size}  decord threads: {args.threads}  cpus: {os.cpu_count()}  "
          f"load avg: {os.getloadavg()[0]:.1f}")
    rate, cpu = {}, {}
    for name, rs in results.items():
        rate[name] = float(np.median([n / wall for n, wall, _, _ in rs]))
        cpu[name] = float(np.median([c / n * 1000 for n, _, c, _ in rs]))
        print(f"{name:52s} {rate[name]:6.2f} clips/s  {1000 / rate[name]:7.1f} ms/clip wall  {cpu[name]:7.1f} ms/clip CPU")
    ours, naive = "loader (eval frames)", "naive: webdataset + decode all with vr.next()"
    v1, v2 = results[ours][-1][3], results[naive][-1][3]
    same = [k for k in v1 if k in v2]
    identical = bool(same) and all(torch.equal(v1[k], v2[k]) for k in same)
    print(f"speed-up loader / naive: {rate[ours] / rate[naive]:.2f}x wall clock, "
          f"{cpu[naive] / cpu[ours]:.2f}x CPU time; identical frames on {len(same)} clips: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
