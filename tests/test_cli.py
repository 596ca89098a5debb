"""The command line and the yt-dlp path, run for real (subprocesses, a local server)."""
import subprocess
import sys

import pytest

from pipeline.config import DownloadConfig, load_config
from pipeline.download import download, is_platform_url
from pipeline.errors import StageError
from pipeline.probe import probe


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_help_documents_every_config_option():
    out = run_cli("build", "--help").stdout
    cfg = load_config().to_dict()
    flags = [f"--{sec.replace('_', '-')}.{k.replace('_', '-')}" for sec, val in cfg.items()
             if isinstance(val, dict) for k in val] + [f"--{k.replace('_', '-')}" for k, v in cfg.items()
                                                        if not isinstance(v, dict)]
    missing = [f for f in flags if f not in out]
    assert not missing
    assert "--retry-errors" in out and "--address" in out


def test_bad_config_fails_fast_with_a_clear_message(tmp_path):
    (tmp_path / "c.yaml").write_text("shards:\n  max_sampels: 3\n")
    (tmp_path / "u.txt").write_text("http://127.0.0.1:9/x.mp4\n")
    p = run_cli("build", "--urls", str(tmp_path / "u.txt"), "--out", str(tmp_path / "o"),
                "--config", str(tmp_path / "c.yaml"))
    assert p.returncode == 2 and "unknown config option shards.'max_sampels'" in p.stderr
    p = run_cli("build", "--urls", str(tmp_path / "u.txt"), "--out", str(tmp_path / "o"), "--seed", "x")
    assert p.returncode == 2 and "seed: expected int" in p.stderr


def test_platform_urls_are_routed_to_ytdlp():
    assert is_platform_url("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert is_platform_url("https://vimeo.com/76979871")
    assert not is_platform_url("https://cdn.example.com/videos/a.mp4")


def test_ytdlp_download_of_a_direct_link_on_localhost(tmp_path, corpus, server):
    cfg = DownloadConfig(ytdlp_force=True)
    got = download(server.url + "/media/video_000.mp4", str(tmp_path), cfg)
    assert got.source == "ytdlp" and got.bytes == (corpus[0] / "video_000.mp4").stat().st_size
    rec = probe(got.path, video_id="v", url="u", source=got.source, nbytes=got.bytes, title=got.title,
                cfg=load_config().probe)
    assert rec.video_codec == "h264" and rec.audio_codec == "aac"
    with pytest.raises(StageError) as e:
        download(server.url + "/404", str(tmp_path / "x"), cfg)
    assert e.value.reason == "ytdlp_error" and "404" in e.value.message
