"""Running ffmpeg/ffprobe safely: whitelisted protocols and demuxers, timeouts, clear errors.

A downloaded file is attacker-controlled. An HLS playlist or a concat script could name
local files or other URLs, so inputs may only be opened through the `file` protocol and
only by ordinary container demuxers (no hls, concat, image2 or other file-listing ones).
"""
from __future__ import annotations

import os
import subprocess

from pipeline.errors import StageError

DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,asf,ogg,wav,mp3,aac,h264,hevc"


def safe_input(path: str) -> list[str]:
    """Input options + the input itself, as an absolute file: URL (so '-x' or 'a|b' stay names)."""
    return ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS,
            "-i", "file:" + os.path.abspath(path)]


def run(cmd: list[str], *, timeout: float, stage: str, reason: str) -> bytes:
    """Run an ffmpeg-family command; stdout on success, StageError(stage, reason) otherwise."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StageError(stage, "deadline", f"{cmd[0]} ran longer than {timeout:.0f}s") from None
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise StageError(stage, reason, f"{cmd[0]} exit {p.returncode}: {' | '.join(err[-3:])[:400]}")
    return p.stdout
