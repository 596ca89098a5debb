"""Benchmark: the whole build vs the two stages no pipeline can skip, in one process run.

  1. bare faster-whisper on the same audio (same model and settings, audio decoded beforehand)
  2. bare ffmpeg re-encode of the same videos to the clip settings (whole videos, one process each)
  3. the pipeline: `build()` over the videos served on 127.0.0.1, Ray start-up included

Prints audio-seconds per wall-second for each and the ratio pipeline / (1 + 2).
Usage: python bench/bench_build.py --videos 16 --out bench_out [--config FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from pipeline import asr, synth
from pipeline.audio import SAMPLE_RATE, extract_audio
from pipeline.clip import clip_geometry
from pipeline.config import load_config
from pipeline.probe import probe


def bare_whisper(paths, cfg) -> float:
    audio = [extract_audio(p) for p in paths]                # not timed: decoding is not ASR
    model = asr.load_model(cfg.asr)
    asr.transcribe(model, audio[0][: SAMPLE_RATE * 5], cfg.asr)   # warm-up, like a loaded actor
    t = time.perf_counter()
    for pcm in audio:
        asr.transcribe(model, pcm, cfg.asr)
    return time.perf_counter() - t


def bare_ffmpeg(paths, cfg, tmp) -> float:
    t = time.perf_counter()
    for i, p in enumerate(paths):
        v = probe(p, video_id="b", url=p, source="file", nbytes=0, title="", cfg=cfg.probe)
        w, h, fps = clip_geometry(v, cfg.clip)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", p, "-an",
                        "-vf", f"scale={w}:{h},fps={fps}", "-c:v", "libx264", "-preset", cfg.clip.preset,
                        "-crf", str(cfg.clip.crf), "-pix_fmt", "yuv420p", "-g", str(round(fps)),
                        "-threads", str(cfg.clip.threads), os.path.join(tmp, f"{i}.mp4")], check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--sentences", type=int, default=12)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--config")
    args = ap.parse_args()
    cfg = load_config(args.config)
    media = os.path.join(args.out, "media")
    os.makedirs(media, exist_ok=True)
    truth = synth.make_corpus(media, args.videos, sentences_per_video=args.sentences)
    paths = [os.path.join(media, n) for n in sorted(truth)]
    audio_s = sum(len(extract_audio(p)) for p in paths) / SAMPLE_RATE

    tw = bare_whisper(paths, cfg)
    tmp = os.path.join(args.out, "ffmpeg")
    os.makedirs(tmp, exist_ok=True)
    tf = bare_ffmpeg(paths, cfg, tmp)

    base, stop = synth.serve_directory(media)
    urls = os.path.join(args.out, "urls.txt")
    with open(urls, "w") as f:
        f.write("".join(f"{base}/{os.path.basename(p)}\n" for p in paths))
    shards = os.path.join(args.out, "shards")
    shutil.rmtree(shards, ignore_errors=True)
    from pipeline.engine import build
    t = time.perf_counter()
    summary = build(urls, shards, cfg, log=lambda m: print(m, file=sys.stderr))
    tp = time.perf_counter() - t
    stop()

    row = {"videos": len(paths), "audio_s": round(audio_s, 1), "samples": summary.samples,
           "bare_whisper_s": round(tw, 2), "bare_ffmpeg_s": round(tf, 2), "pipeline_s": round(tp, 2),
           "ratio_pipeline_to_bare_sum": round(tp / (tw + tf), 3),
           "machine": f"{platform.machine()} {os.cpu_count()} cores", "asr_device": asr.resolve_device(cfg.asr)[0]}
    print(f"\n{'stage':<34}{'wall s':>9}{'audio s / wall s':>19}")
    print(f"{'bare faster-whisper (' + cfg.asr.model + ')':<34}{tw:9.2f}{audio_s / tw:19.1f}")
    print(f"{'bare ffmpeg re-encode':<34}{tf:9.2f}{audio_s / tf:19.1f}")
    print(f"{'bare sum (the bound)':<34}{tw + tf:9.2f}{audio_s / (tw + tf):19.1f}")
    print(f"{'pipeline build (Ray start incl.)':<34}{tp:9.2f}{audio_s / tp:19.1f}")
    print(f"ratio pipeline / bare sum: {tp / (tw + tf):.2f} (aim <= 1.15)")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
