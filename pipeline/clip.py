"""Stage 7: cut a sample's span out of the source video, re-encoded and frame-accurate.

`-ss` before the input with re-encoding makes ffmpeg decode from the previous keyframe and
drop frames before the start, so frame 0 of the clip is the first source frame at or after
the span start and clip time t shows source time start + t: a unit's time range in the
clip shows what was on screen while it was spoken. Short GOPs (a keyframe every second)
keep random access cheap for the loader; bitexact flags keep reruns byte-identical.
"""
from __future__ import annotations

import os

from pipeline import ff
from pipeline.config import ClipConfig
from schemas import VideoRecord


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def clip_geometry(video: VideoRecord, cfg: ClipConfig) -> tuple[int, int, float]:
    """(width, height, fps) of the clips of this video: short side capped, never upscaled."""
    w, h = video.width or cfg.short_side, video.height or cfg.short_side
    short = min(w, h)
    target = min(cfg.short_side, short)
    scale = target / short
    fps = min(video.fps, cfg.max_fps) if video.fps > 0 else cfg.max_fps
    return _even(w * scale), _even(h * scale), round(fps, 3)


def cut_clip(path: str, start: float, end: float, video: VideoRecord, cfg: ClipConfig,
             dest: str, timeout: float = 300.0) -> bytes:
    """Encode [start, end) of `path` into `dest` (mp4) and return its bytes."""
    width, height, fps = clip_geometry(video, cfg)
    gop = max(1, int(round(fps * cfg.keyframe_s)))
    audio = ["-map", "0:a:0?", "-c:a", "aac", "-b:a", "64k", "-ac", "1"] if cfg.keep_audio else ["-an"]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start:.3f}", *ff.safe_input(path),
           "-t", f"{end - start:.3f}", "-map", "0:v:0", *audio, "-sn", "-dn",
           "-vf", f"scale={width}:{height},fps={fps}",
           "-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
           "-g", str(gop), "-threads", str(cfg.threads),
           "-map_metadata", "-1", "-fflags", "+bitexact", "-flags", "+bitexact",
           "-movflags", "+faststart", "-f", "mp4", dest]
    ff.run(cmd, timeout=timeout, stage="clip", reason="clip_error")
    with open(dest, "rb") as f:
        data = f.read()
    os.unlink(dest)
    return data
