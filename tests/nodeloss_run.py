"""Run by test_node_loss: a 2-node Ray cluster on this machine loses its worker mid-build, the
survivor works on alone, then a new node joins and the ASR pool grows back.

Usage: python tests/nodeloss_run.py URLS OUT MEDIA_DIR ; prints the summary as JSON, with the
live node counts and the build's pool log lines.

  1. head (2 CPUs) + worker (2 CPUs), 2 ASR actors (1 CPU each), video tasks of 0.5 CPU.
  2. The build gets URLS plus one held video: a server here answers it only when released,
     so the build is still running when the node comes back.
  3. Once a video is journaled the worker dies. The build must shrink its pool (2 actors
     would take all of the head's CPUs) and the head alone must finish every other video.
  4. A new node (2 CPUs) joins: the pool must grow back to 2; then the held video is released
     and the build finishes.
"""
import dataclasses
import glob
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ray
from ray.cluster_utils import Cluster

from pipeline.config import load_config
from pipeline.engine import build

HELD = "video_003.mp4"


def hold_server(media_dir: str, released: threading.Event) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            released.wait(timeout=400)
            with open(os.path.join(media_dir, HELD), "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass        # a request from the lost node: its client is gone

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def wait_for(what: str, cond, build_thread: threading.Thread, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        if not build_thread.is_alive():
            raise SystemExit(f"the build ended while waiting for {what}")
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def alive() -> int:
    return len([n for n in ray.nodes() if n["Alive"]])


def main(urls: str, out: str, media_dir: str) -> None:
    released = threading.Event()
    httpd = hold_server(media_dir, released)
    with open(urls) as f:
        n_urls = len(f.read().split())
    all_urls = os.path.join(os.path.dirname(out), "urls_all.txt")
    with open(urls) as f, open(all_urls, "w") as g:
        g.write(f.read().rstrip("\n") + f"\nhttp://127.0.0.1:{httpd.server_address[1]}/hold/{HELD}\n")

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        run(cluster, all_urls, n_urls, out, released)
    finally:                             # also on a timeout: leave no Ray process behind
        released.set()
        ray.shutdown()
        cluster.shutdown()
        httpd.shutdown()


def run(cluster, urls: str, n_urls: int, out: str, released: threading.Event) -> None:
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="WARNING")
    cfg = load_config(overrides={"segment.min_unit_s": 2.0, "shards.max_samples": 2, "asr.actors": 2,
                                 "task_cpus": 0.5, "download.read_timeout_s": 400, "progress_s": 3})
    pool_log = []

    def log(m):
        print(f"{time.strftime('%H:%M:%S')} {m}", file=sys.stderr, flush=True)
        if "ASR actor" in m:
            pool_log.append(m)

    result = {}
    t = threading.Thread(target=lambda: result.update(summary=build(urls, out, cfg, log=log)), daemon=True)
    t.start()

    def journaled():
        return len(glob.glob(os.path.join(out, "_state", "videos", "*", "*.json")))

    wait_for("a journaled video", lambda: journaled() >= 1, t)
    alive_before = alive()
    log("[nodeloss_run] removing the worker node")
    cluster.remove_node(worker)          # the worker node dies while videos are in flight
    wait_for("the pool to shrink", lambda: any("shrank" in m for m in pool_log), t)
    wait_for("the survivor to finish the other videos", lambda: journaled() >= n_urls, t)
    alive_lost = alive()
    log("[nodeloss_run] adding a node")
    cluster.add_node(num_cpus=2)         # a node joins (restarted, or added by an autoscaler)
    wait_for("the pool to grow", lambda: any("grew" in m for m in pool_log), t, timeout=60)
    log("[nodeloss_run] releasing the held video")
    released.set()
    t.join(timeout=300)
    summary = dataclasses.asdict(result["summary"])
    summary.update(alive_before=alive_before, alive_lost=alive_lost, alive_after=alive(), pool_log=pool_log)
    print(json.dumps(summary), flush=True)

if __name__ == "__main__":
    main(*sys.argv[1:4])
