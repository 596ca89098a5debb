"""Ray Jobs for real: a `ray start --head` with its job server, jobs sent by JobSubmissionClient."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """A head node in its own process group, so that stopping it stops only it (not `ray stop`).

    Ray 2.60 turns token auth on by default, and a process that already ran ray.init (the
    other tests) keeps the auth mode it read then, so a token set here would not reach this
    process's client: this loopback-only head runs with auth disabled instead.
    """
    dash = free_port()
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--port", str(free_port()), "--num-cpus", "2",
         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--disable-usage-stats",
         # the tests' own local Ray already holds the default agent ports on this machine
         "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
         "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"})
    try:
        from ray.job_submission import JobSubmissionClient
        client, deadline = None, time.time() + 120
        while client is None:
            try:
                client = JobSubmissionClient(f"http://127.0.0.1:{dash}")
            except OSError:                          # the dashboard is not up yet
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def submit(client, **kwargs) -> str:
    """submit_job, retried while the head's job agent is still starting."""
    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def wait(client, job_id, timeout=420):
    from ray.job_submission import JobStatus
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    client.stop_job(job_id)
    raise AssertionError(f"job {job_id} still running after {timeout}s:\n{client.get_job_logs(job_id)[-3000:]}")


def test_build_job_succeeds_and_bad_config_job_fails_clearly(head, corpus, server, tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server.url}/media/video_000.mp4\n{server.url}/media/video_001.mp4\n")
    out = tmp_path / "out"
    env = {"working_dir": ROOT, "excludes": [".venv", ".git", "demo_out", "bench_out"]}
    job = submit(head,
        entrypoint=f"{sys.executable} jobs/build_shards.py --urls {urls} --out {out} "
                   f"--config jobs/configs/build.yaml --segment.min-unit-s 2 --shards.max-samples 2",
        runtime_env=env)
    status = wait(head, job)
    logs = head.get_job_logs(job)
    assert status.value == "SUCCEEDED", logs[-3000:]
    assert '"videos_ok": 2' in logs
    assert len([f for f in os.listdir(out) if f.endswith(".tar")]) == 3        # 6 samples / 2

    (tmp_path / "bad.yaml").write_text("shards:\n  max_sampels: 3\n")
    job = submit(head, entrypoint=f"{sys.executable} jobs/build_shards.py --urls {urls} "
                                     f"--out {tmp_path / 'out2'} --config {tmp_path / 'bad.yaml'}",
                          runtime_env=env)
    assert wait(head, job).value == "FAILED"
    assert "unknown config option shards.'max_sampels'" in head.get_job_logs(job)
