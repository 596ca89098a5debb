"""Stage 6: ASR words -> transcript units -> TVTS sample windows.

A unit is a few seconds of speech (default 3-5 s, the official recipe's segment length)
with at least `min_words` words. Units are cut from the word timestamps: a unit closes at a
sentence end or a pause once it is long enough, and is split at a word boundary before it
would grow past `max_unit_s`. A sample is K consecutive units; its clip spans from the
first unit's first word to the last unit's last word.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import SegmentConfig
from pipeline.errors import StageError
from schemas import Transcript, Unit, Word


@dataclass
class Window:
    start: float            # span in the source video
    end: float
    units: list[Unit]       # times relative to `start`


def _unit(words: list[Word]) -> Unit:
    return Unit(text=" ".join(w.text for w in words), start=words[0].start, end=words[-1].end,
                words=list(words))


def make_units(transcript: Transcript, cfg: SegmentConfig) -> list[Unit]:
    """Valid units in time order (absolute times); too short/too sparse pieces are dropped."""
    flat: list[tuple[Word, bool]] = []
    for seg in transcript.segments:
        for i, w in enumerate(seg.words):
            flat.append((w, i == len(seg.words) - 1))
    pieces: list[list[Word]] = []
    cur: list[Word] = []
    for i, (w, seg_end) in enumerate(flat):
        if cur and (w.start - cur[-1].end > cfg.max_gap_s or w.end - cur[0].start > cfg.max_unit_s):
            pieces.append(cur)
            cur = []
        cur.append(w)
        next_gap = flat[i + 1][0].start - w.end if i + 1 < len(flat) else float("inf")
        sentence_end = seg_end or w.text[-1:] in (".", "?", "!")
        if w.end - cur[0].start >= cfg.min_unit_s and (sentence_end or next_gap >= cfg.pause_split_s):
            pieces.append(cur)
            cur = []
    if cur:
        pieces.append(cur)
    return [_unit(p) for p in pieces
            if len(p) >= cfg.min_words and cfg.min_unit_s <= p[-1].end - p[0].start <= cfg.max_unit_s]


def make_windows(transcript: Transcript, cfg: SegmentConfig) -> list[Window]:
    """K consecutive units per window; a silence longer than max_gap_s starts a new run."""
    k = cfg.units_per_sample
    stride = cfg.stride or k
    runs: list[list[Unit]] = []
    for u in make_units(transcript, cfg):
        if runs and u.start - runs[-1][-1].end <= cfg.max_gap_s:
            runs[-1].append(u)
        else:
            runs.append([u])
    windows = []
    for run in runs:
        for i in range(0, len(run) - k + 1, stride):
            units = run[i:i + k]
            t0, t1 = units[0].start, units[-1].end
            windows.append(Window(start=t0, end=t1, units=[_shift(u, t0) for u in units]))
    if not windows:
        longest = max((len(r) for r in runs), default=0)
        raise StageError("segment", "too_few_units",
                         f"longest run has {longest} unit(s), a sample needs {k}")
    return windows


def _shift(u: Unit, t0: float) -> Unit:
    r = lambda t: round(t - t0, 3)  # noqa: E731
    return Unit(text=u.text, start=r(u.start), end=r(u.end),
                words=[Word(text=w.text, start=r(w.start), end=r(w.end), prob=w.prob) for w in u.words])
