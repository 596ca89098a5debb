"""Stage 2: fetch one video to a local file.

Plain HTTP(S) is streamed to disk (never held in memory) with connect/read timeouts, a
deadline, retries with exponential backoff on 5xx/408/429/connection errors, a redirect
limit, a byte cap and a Content-Length check. Platform pages (YouTube, Vimeo, ...) go
through yt-dlp in one call (video + audio + info). Every failure is a StageError with a
reason code from pipeline.errors.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests

from pipeline.config import DownloadConfig
from pipeline.errors import StageError
from pipeline.urls import check_url

CHUNK = 1 << 20


@dataclass
class Downloaded:
    path: str
    bytes: int
    source: str      # "http", "ytdlp" or "file"
    title: str = ""


def download(url: str, dest_dir: str, cfg: DownloadConfig) -> Downloaded:
    """Fetch `url` into `dest_dir` (a per-video temporary directory)."""
    check_url(url, cfg.allow_local_files)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):              # allowed local file: read it in place
        path = url2pathname(urlsplit(url).path) if scheme == "file" else url
        if not os.path.isfile(path):
            raise StageError("download", "http_4xx", f"no such file: {path}")
        return Downloaded(path=path, bytes=os.path.getsize(path), source="file")
    if cfg.ytdlp_force or (cfg.ytdlp and is_platform_url(url)):
        return _download_ytdlp(url, dest_dir, cfg)
    return _download_http(url, os.path.join(dest_dir, "video"), cfg)


def _download_http(url: str, dest: str, cfg: DownloadConfig) -> Downloaded:
    deadline = time.monotonic() + cfg.deadline_s
    session = requests.Session()
    session.max_redirects = cfg.max_redirects
    session.headers["User-Agent"] = cfg.user_agent
    last: StageError | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            delay = cfg.backoff_s * 2 ** (attempt - 1)
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
        try:
            size = _attempt(session, url, dest, cfg, deadline)
            return Downloaded(path=dest, bytes=size, source="http")
        except StageError as e:
            if e.reason not in ("http_5xx", "http_throttled", "connect_error", "timeout", "truncated"):
                raise                                # retrying cannot help: 404, too large, ...
            if e.reason == "timeout" and time.monotonic() >= deadline:
                raise
            last = e
    raise last or StageError("download", "timeout", f"deadline of {cfg.deadline_s}s passed")


def _attempt(session: requests.Session, url: str, dest: str, cfg: DownloadConfig, deadline: float) -> int:
    timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
    try:
        with session.get(url, stream=True, timeout=timeout) as r:
            if r.status_code in (408, 429):
                raise StageError("download", "http_throttled", f"HTTP {r.status_code}")
            if r.status_code >= 500:
                raise StageError("download", "http_5xx", f"HTTP {r.status_code}")
            if r.status_code >= 400:
                raise StageError("download", "http_4xx", f"HTTP {r.status_code}")
            ctype = r.headers.get("Content-Type", "").lower()
            if ctype.startswith("text/"):
                raise StageError("download", "not_media", f"Content-Type is {ctype}")
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > cfg.max_bytes:
                raise StageError("download", "too_large", f"Content-Length {expected} > cap {cfg.max_bytes}")
            size = 0
            with open(dest, "wb") as f:
                for chunk in r.iter_content(CHUNK):
                    size += len(chunk)
                    if size > cfg.max_bytes:
                        raise StageError("download", "too_large", f"body passed the cap of {cfg.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise StageError("download", "timeout", f"download deadline of {cfg.deadline_s}s passed")
                    f.write(chunk)
            if expected is not None and size != expected:
                raise StageError("download", "truncated", f"got {size} of {expected} bytes")
            return size
    except requests.TooManyRedirects:
        raise StageError("download", "too_many_redirects", f"more than {cfg.max_redirects} redirects") from None
    except requests.exceptions.InvalidSchema as e:
        raise StageError("download", "bad_scheme", f"redirect to a refused scheme: {e}") from None
    except requests.exceptions.ChunkedEncodingError as e:
        raise StageError("download", "truncated", f"connection closed early: {e}") from None
    except requests.Timeout as e:
        raise StageError("download", "timeout", str(e)[:300]) from None
    except requests.ConnectionError as e:
        # a read timeout in the middle of the body surfaces as a ConnectionError
        reason = "timeout" if "timed out" in str(e).lower() else "connect_error"
        raise StageError("download", reason, str(e)[:300]) from None


# ----------------------------------------------------------------------------- yt-dlp

@functools.lru_cache(maxsize=1)
def _platform_extractors():
    from yt_dlp.extractor import gen_extractor_classes
    return [ie for ie in gen_extractor_classes() if ie.IE_NAME != "generic"]


def is_platform_url(url: str) -> bool:
    """True when a yt-dlp extractor other than the generic one claims the URL."""
    return any(ie.suitable(url) for ie in _platform_extractors())


def _rate(text: str) -> float | None:
    if not text:
        return None
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1].upper(), 1)
    return float(text.rstrip("KMGkmg")) * mult


def _download_ytdlp(url: str, dest_dir: str, cfg: DownloadConfig) -> Downloaded:
    import yt_dlp

    opts = {
        "format": cfg.ytdlp_format,
        "outtmpl": os.path.join(dest_dir, "yt.%(ext)s"),
        "merge_output_format": "mp4",
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "socket_timeout": cfg.read_timeout_s,
        "retries": cfg.retries,
        "max_filesize": cfg.max_bytes,
        "cookiefile": cfg.ytdlp_cookies or None,
        "proxy": cfg.ytdlp_proxy or None,
        "ratelimit": _rate(cfg.ytdlp_rate_limit),
    }
    try:
        with yt_dlp.YoutubeDL({k: v for k, v in opts.items() if v is not None}) as ydl:
            info = ydl.extract_info(url, download=True)
    except Exception as e:  # yt-dlp raises DownloadError/ExtractorError with its own message
        raise StageError("download", "ytdlp_error", str(e)[:500]) from None
    files = sorted(Path(dest_dir).glob("yt.*"))
    if not info or not files:
        raise StageError("download", "ytdlp_error", "yt-dlp reported success but wrote no file"
                         if info else "yt-dlp returned nothing (file over the byte cap?)")
    path = str(files[0])
    return Downloaded(path=path, bytes=os.path.getsize(path), source="ytdlp",
                      title=str(info.get("title") or ""))
