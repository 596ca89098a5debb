"""SIGKILL of an ASR actor and of a video-task worker mid-build loses no video.

Ray restarts the actor (max_restarts) and retries the calls and tasks that died with it
(max_task_retries, task_retries); every video still ends with its samples.
"""
import os
import signal
import threading
import time

from pipeline.config import load_config
from pipeline.engine import build


def _pids(prefix: bytes) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(prefix):
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_killing_an_asr_actor_and_a_task_worker_loses_nothing(corpus, server, ray_local, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(4)))
    cfg = load_config(overrides={"segment.min_unit_s": 2.0, "asr.actors": 1, "max_inflight": 2})
    result = {}
    t = threading.Thread(target=lambda: result.update(s=build(str(urls), str(tmp_path / "out"), cfg)))
    t.start()
    killed = set()
    deadline = time.time() + 120
    while len(killed) < 2 and time.time() < deadline and t.is_alive():
        # a busy actor / task worker shows the method or function it runs in its title
        for name, prefix in (("asr", b"ray::AsrActor.transcribe"), ("task", b"ray::_video_task")):
            pids = _pids(prefix)
            if name not in killed and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.add(name)
        time.sleep(0.05)
    t.join(timeout=400)
    assert killed == {"asr", "task"}
    summary = result["s"]
    assert (summary.videos_ok, summary.videos_failed, summary.samples) == (4, 0, 12)
