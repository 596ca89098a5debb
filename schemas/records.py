"""Typed records for every stage boundary and every file the build writes.

Times are seconds (float). Times inside a Sample are relative to the start of its clip;
`source_start`/`source_end` place the clip in the source video.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa

SCHEMA_VERSION = 1


@dataclass
class UrlRow:
    """One input row after reading a URL list (stage 1)."""
    id: str
    url: str
    row: int                      # 0-based position in the input, after dropping duplicates
    meta: dict[str, Any] = field(default_factory=dict)  # every other input column


@dataclass
class VideoRecord:
    """What the probe learned about a downloaded video (stage 3)."""
    video_id: str
    url: str
    source: str                   # "http", "ytdlp" or "file"
    bytes: int
    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str
    title: str = ""               # from yt-dlp's info, when it was used


@dataclass
class Word:
    text: str
    start: float
    end: float
    prob: float


@dataclass
class Segment:
    """One faster-whisper segment (stage 5)."""
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_prob: float
    words: list[Word]


@dataclass
class Transcript:
    language: str
    language_prob: float
    duration: float               # seconds of audio transcribed
    model: str
    segments: list[Segment]


@dataclass
class Unit:
    """One transcript unit of a sample: a few seconds of speech with its words."""
    text: str
    start: float                  # relative to the clip start
    end: float
    words: list[Word]


@dataclass
class Sample:
    """The KEY.json of a shard sample (stages 6-8)."""
    schema_version: int
    key: str
    video_id: str
    url: str
    index: int                    # sample number inside its video
    source_start: float           # clip span in the source video
    source_end: float
    duration: float
    language: str
    language_prob: float
    asr_model: str
    clip_width: int
    clip_height: int
    clip_fps: float
    units: list[Unit]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ErrorRow:
    """Why one input produced no samples. `reason` is a stable code (pipeline.errors)."""
    id: str
    url: str
    row: int
    stage: str
    reason: str
    message: str
    retryable: bool


@dataclass
class VideoResult:
    """Journal entry of one input: written once the video is finished, ok or failed.

    The clips themselves are staged next to it; Samples carry no bytes.
    """
    video_id: str
    url: str
    row: int
    status: str                   # "ok" or "failed"
    audio_s: float
    wall_s: float
    video: Optional[VideoRecord]
    transcript: Optional[Transcript]
    samples: list[Sample]
    clip_bytes: list[int]         # size of each sample's mp4, same order as samples
    error: Optional[ErrorRow]


@dataclass
class ManifestRow:
    """One row of manifest.parquet per sample in the shards."""
    key: str
    shard: str
    video_id: str
    url: str
    index: int
    source_start: float
    source_end: float
    duration: float
    video_duration: float
    num_units: int
    num_words: int
    language: str
    bytes: int


@dataclass
class ShardStats:
    shard: str
    window: int
    samples: int
    videos: int
    bytes: int


@dataclass
class FailedVideo:
    """A failed video in its window's roll-up: its error row and the audio it had decoded."""
    error: ErrorRow
    audio_s: float


@dataclass
class WindowRollup:
    """What the end of a build and a rerun need from a window's journal, so neither reads it.

    Counts the result each video had when the window was written. `failed` holds every failed
    video of the window; ok videos are only counted (an ok video is never redone).
    """
    videos_ok: int
    ok_audio_s: float             # audio seconds of the ok videos
    failed: list[FailedVideo]


@dataclass
class WindowRecord:
    """`_state/windows/W.json`: written once window W's shards and manifest part are written.

    Retry windows (numbered from the engine's RETRY_WINDOW_BASE) list the retried videos,
    whose results supersede those in every lower-numbered window.
    """
    window: int
    first_shard: int
    videos: list[str]
    shards: list[ShardStats]
    samples: int
    rollup: Optional[WindowRollup] = None   # absent in records written before the roll-up


@dataclass
class RunSummary:
    schema_version: int
    videos_total: int
    videos_ok: int
    videos_failed: int
    failed_by_reason: dict[str, int]
    samples: int
    shards: int
    audio_hours: float
    wall_s: float
    audio_s_per_wall_s: float
    videos_per_hour: float
    processed_videos: int         # downloaded and processed by this run
    resumed_videos: int           # finished in an earlier run and not redone
    duplicates_dropped: int
    seed: int


# ----------------------------------------------------------------------------- helpers

# typing.get_type_hints re-evaluates every annotation on each call (these are strings under
# `from __future__ import annotations`): cache it, from_dict runs once per nested record
_hints = functools.lru_cache(maxsize=None)(typing.get_type_hints)


def _hint_args(tp):
    return typing.get_origin(tp), typing.get_args(tp)


def _arrow_type(tp) -> pa.DataType:
    origin, args = _hint_args(tp)
    if origin in (typing.Union, types.UnionType):          # Optional[X]
        (inner,) = [a for a in args if a is not type(None)]
        return _arrow_type(inner)
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if origin is dict or tp is Any:
        return pa.string()                                  # free-form: stored as JSON text
    if dataclasses.is_dataclass(tp):
        return pa.struct([pa.field(n, _arrow_type(t)) for n, t in _hints(tp).items()])
    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}[tp]


def arrow_schema(cls) -> pa.Schema:
    """The pyarrow schema of a record class, with the schema version in its metadata."""
    fields = [pa.field(n, _arrow_type(t)) for n, t in _hints(cls).items()]
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION), "record": cls.__name__})


def _to_arrow_value(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _to_arrow_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return [_to_arrow_value(v) for v in value]
    return value


def to_table(records: list, cls) -> pa.Table:
    """Records -> a pyarrow Table with cls's schema (raises if a value does not fit)."""
    schema = arrow_schema(cls)
    rows = [_to_arrow_value(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def from_dict(cls, data):
    """Build (and validate) a record from parsed JSON: unknown or missing fields raise."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}: missing field {f.name!r}")
    return cls(**kwargs)


def _convert(tp, value, where):
    origin, args = _hint_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        return [_convert(args[0], v, where) for v in value]
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value
