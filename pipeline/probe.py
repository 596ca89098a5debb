"""Stage 3: ffprobe a downloaded file; require a video and an audio stream."""
from __future__ import annotations

import json

from pipeline import ff
from pipeline.config import ProbeConfig
from pipeline.errors import StageError
from schemas import VideoRecord


def _rate(text: str) -> float:
    num, _, den = (text or "0/1").partition("/")
    return float(num) / float(den or 1) if float(den or 1) else 0.0


def probe(path: str, *, video_id: str, url: str, source: str, nbytes: int, title: str,
          cfg: ProbeConfig, timeout: float = 60.0) -> VideoRecord:
    out = ff.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format",
                  *ff.safe_input(path)], timeout=timeout, stage="probe", reason="not_media")
    info = json.loads(out or b"{}")
    streams = info.get("streams", [])
    # cover art in an audio file shows up as a one-frame "video" stream: not a video
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not s.get("disposition", {}).get("attached_pic")]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not streams:
        raise StageError("probe", "not_media", "no streams")
    if not videos:
        raise StageError("probe", "no_video", "no video stream")
    if not audios:
        raise StageError("probe", "no_audio", "no audio stream")
    v, a = videos[0], audios[0]
    duration = float(info.get("format", {}).get("duration") or v.get("duration") or 0.0)
    if not cfg.min_duration_s <= duration <= cfg.max_duration_s:
        raise StageError("probe", "duration_out_of_range",
                         f"{duration:.1f}s not in [{cfg.min_duration_s}, {cfg.max_duration_s}]")
    return VideoRecord(video_id=video_id, url=url, source=source, bytes=nbytes, duration=duration,
                       width=int(v.get("width") or 0), height=int(v.get("height") or 0),
                       fps=_rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate")),
                       video_codec=str(v.get("codec_name", "")), audio_codec=str(a.get("codec_name", "")),
                       title=title)
