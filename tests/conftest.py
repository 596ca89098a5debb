"""Shared fixtures: a generated media corpus, a faulty HTTP server on 127.0.0.1, one local Ray."""
import json
import os

import numpy as np
import pytest

from pipeline import synth
from tests.faultserver import FaultServer


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """4 narrated videos of 12 sentences (3 samples each at K=4) plus broken media."""
    d = tmp_path_factory.mktemp("media")
    truth = synth.make_corpus(str(d), n_videos=4, sentences_per_video=12, seed=1)
    synth.make_silent_video(str(d / "silent.mp4"))
    synth.make_video_without_audio(str(d / "noaudio.mp4"))
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    # an HLS playlist in disguise that names a local file: ffmpeg must never open it
    (d / "playlist.mp4").write_text(f"#EXTM3U\n#EXTINF:4,\nfile://{d}/video_000.mp4\n#EXT-X-ENDLIST\n")
    return d, truth


@pytest.fixture(scope="session")
def server(corpus):
    s = FaultServer(str(corpus[0]))
    yield s
    s.close()


@pytest.fixture(scope="session")
def ray_local():
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
