"""One video through stages 2-7: download -> probe -> audio -> ASR -> segment -> clip.

A plain function: the engine runs it as a Ray task and passes a `transcribe` callable that
forwards to an ASR actor; tests and benchmarks can pass a local model instead. Every
expected failure becomes a VideoResult with an ErrorRow; nothing escapes but bugs in Ray.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import traceback
from typing import Callable

import numpy as np

from pipeline.audio import SAMPLE_RATE, extract_audio
from pipeline.clip import clip_geometry, cut_clip
from pipeline.config import BuildConfig
from pipeline.download import download
from pipeline.errors import RETRYABLE, StageError
from pipeline.probe import probe
from pipeline.segment import make_windows
from schemas import SCHEMA_VERSION, ErrorRow, Sample, Transcript, UrlRow, VideoResult

Transcribe = Callable[[np.ndarray], Transcript]


def sample_key(video_id: str, index: int) -> str:
    return f"{video_id}_{index:04d}"


def failed(row: UrlRow, stage: str, reason: str, message: str, wall_s: float = 0.0,
           audio_s: float = 0.0) -> VideoResult:
    err = ErrorRow(id=row.id, url=row.url, row=row.row, stage=stage, reason=reason,
                   message=message, retryable=reason in RETRYABLE)
    return VideoResult(video_id=row.id, url=row.url, row=row.row, status="failed", audio_s=audio_s,
                       wall_s=round(wall_s, 3), video=None, transcript=None, samples=[],
                       clip_bytes=[], error=err)


def process_video(row: UrlRow, cfg: BuildConfig, transcribe: Transcribe) -> tuple[VideoResult, list[bytes]]:
    t0 = time.monotonic()
    deadline = t0 + cfg.video_timeout_s
    stage = "download"
    audio_s = 0.0

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StageError(stage, "deadline", f"video deadline of {cfg.video_timeout_s}s passed")
        return remaining

    with tempfile.TemporaryDirectory(prefix="tvts-") as tmp:
        try:
            dl_cfg = dataclasses.replace(cfg.download, deadline_s=min(cfg.download.deadline_s, left()))
            dl = download(row.url, tmp, dl_cfg)
            stage = "probe"
            video = probe(dl.path, video_id=row.id, url=row.url, source=dl.source, nbytes=dl.bytes,
                          title=dl.title, cfg=cfg.probe, timeout=min(60.0, left()))
            stage = "audio"
            pcm = extract_audio(dl.path, timeout=left())
            audio_s = len(pcm) / SAMPLE_RATE
            stage = "asr"
            transcript = transcribe(pcm)
            del pcm
            stage = "segment"
            windows = make_windows(transcript, cfg.segment)
            stage = "clip"
            width, height, fps = clip_geometry(video, cfg.clip)
            samples, clips = [], []
            for i, win in enumerate(windows):
                data = cut_clip(dl.path, win.start, win.end, video, cfg.clip,
                                os.path.join(tmp, f"clip{i}.mp4"), timeout=left())
                clips.append(data)
                samples.append(Sample(
                    schema_version=SCHEMA_VERSION, key=sample_key(row.id, i), video_id=row.id,
                    url=row.url, index=i, source_start=win.start, source_end=win.end,
                    duration=round(win.end - win.start, 3), language=transcript.language,
                    language_prob=transcript.language_prob, asr_model=transcript.model,
                    clip_width=width, clip_height=height, clip_fps=fps, units=win.units,
                    meta=row.meta))
        except StageError as e:
            return failed(row, e.stage, e.reason, e.message, time.monotonic() - t0, audio_s), []
        except Exception as e:  # a bug, not bad input: keep the traceback's last line for the report
            last = traceback.format_exc().strip().splitlines()[-1]
            return failed(row, stage, "internal_error", f"{type(e).__name__}: {e} ({last})"[:500],
                          time.monotonic() - t0, audio_s), []
    result = VideoResult(video_id=row.id, url=row.url, row=row.row, status="ok",
                         audio_s=round(audio_s, 3), wall_s=round(time.monotonic() - t0, 3),
                         video=video, transcript=transcript, samples=samples,
                         clip_bytes=[len(c) for c in clips], error=None)
    return result, clips
