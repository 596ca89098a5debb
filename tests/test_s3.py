"""Object storage for real: an S3-compatible server (moto) on 127.0.0.1, started by the test.

URL list, shards, manifest, errors and summary live on s3://; training then streams the
shards straight from it with the loader. Credentials/endpoint come only from the environment.
"""
import json
import os
import shutil
import subprocess
import sys

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.engine import build
from pipeline.storage import open_input


@pytest.fixture(scope="module")
def s3():
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="data")
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


CONFIG = {"segment.min_unit_s": 2.0, "shards.max_samples": 2, "shards.shuffle_window": 3}
COUNTS = ("videos_total", "videos_ok", "videos_failed", "failed_by_reason", "samples", "shards",
          "audio_hours", "duplicates_dropped", "seed")


def objects(fs, prefix="data/shards") -> dict:
    """Every object under `prefix`: path -> bytes."""
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    out = {}
    for i in infos:
        if i.type == pafs.FileType.File:
            with fs.open_input_stream(i.path) as f:
                out[i.path] = f.read()
    return out


def url_list(fs, key, server, n_videos):
    with fs.open_output_stream(key) as f:
        f.write("".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(2)).encode()
                + f"{server.url}/404\n".encode()
                + "".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(2, n_videos)).encode())
    return "s3://" + key


@pytest.fixture(scope="module")
def built(s3, corpus, server, ray_local, tmp_path_factory):
    """One build to s3:// (2 videos and a 404: one shuffle window), its work_dir, its objects."""
    fs = pafs.FileSystem.from_uri("s3://data/x")[0]
    work = tmp_path_factory.mktemp("s3build") / "work"
    urls = url_list(fs, "data/lists/urls.txt", server, 2)
    summary = build(urls, "s3://data/shards", load_config(overrides={**CONFIG, "work_dir": str(work)}))
    return fs, urls, work, summary, objects(fs)


def test_build_to_s3_then_stream_training_from_it(built, s3, tmp_path):
    fs, urls, work, summary, objs = built
    assert (summary.videos_ok, summary.samples, summary.shards) == (2, 6, 3)

    assert sorted(objs) == ["data/shards/_state/config.json", "data/shards/_state/windows/0000000000.json",
                            "data/shards/errors.parquet", "data/shards/manifest/part-0000000000.parquet",
                            "data/shards/shard-000000.tar", "data/shards/shard-000001.tar",
                            "data/shards/shard-000002.tar", "data/shards/summary.json"]
    with open_input("s3://data/shards/summary.json") as f:
        assert json.load(f)["samples"] == 6
    with open_input("s3://data/shards/errors.parquet") as f:
        assert pq.read_table(f).column("reason").to_pylist() == ["http_4xx"]
    # the published window record is the local one
    with open(work / "_state" / "windows" / "0000000000.json", "rb") as f:
        assert f.read() == objs["data/shards/_state/windows/0000000000.json"]
    assert not [p for p in os.listdir(work) if p.endswith(".tar")]               # uploaded, not kept

    def train(steps):
        p = subprocess.run([sys.executable, "-m", "pipeline", "train", "--shards",
                            "s3://data/shards/shard-{000000..000002}.tar", "--preset", "tiny",
                            "--steps", str(steps), "--batch-size", "2", "--data.num-workers", "0",
                            "--out", "s3://data/train/run1"],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, **s3, "HOME": str(tmp_path / "home")})
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    final = train(3)                                       # checkpoints go to s3:// too
    assert final["step"] == 3 and final["loss"] > 0
    assert fs.get_file_info("data/train/run1/ckpt/last.pt").size > 0
    shutil.rmtree(tmp_path / "home")                       # a new machine: no local cache
    final = train(5)
    assert (final["step"], final["steps_run"]) == (5, 2)   # resumed from the object store


def test_rerun_with_an_empty_work_dir_resumes_from_the_records_on_s3(built, server, tmp_path):
    """Another machine (or a lost local disk): the window records on s3:// are enough to skip
    every finished window, report the same counts and errors, and number new shards after
    the existing ones."""
    fs, urls, work, summary, objs = built
    hits = dict(server.hits)
    again = build(urls, "s3://data/shards", load_config(overrides={**CONFIG, "work_dir": str(tmp_path / "b")}))
    assert (again.processed_videos, again.resumed_videos) == (0, 0)
    assert dict(server.hits) == hits                                      # nothing fetched
    assert {k: getattr(again, k) for k in COUNTS} == {k: getattr(summary, k) for k in COUNTS}
    now = objects(fs)
    assert sorted(now) == sorted(objs)
    assert {k: v for k, v in now.items() if not k.endswith(("summary.json", "config.json"))} == \
        {k: v for k, v in objs.items() if not k.endswith(("summary.json", "config.json"))}
    assert os.listdir(tmp_path / "b" / "_state" / "windows") == ["0000000000.json"]   # merged

    # one more video in a new window, from yet another empty work_dir: shards 3 and 4
    more = url_list(fs, "data/lists/urls4.txt", server, 3)
    hits = dict(server.hits)
    grown = build(more, "s3://data/shards", load_config(overrides={**CONFIG, "work_dir": str(tmp_path / "c")}))
    assert grown.processed_videos == 1
    assert {p for p in server.hits if server.hits[p] != hits.get(p)} == {"/media/video_002.mp4"}
    assert (grown.videos_ok, grown.samples, grown.shards) == (3, 9, 5)
    assert grown.failed_by_reason == summary.failed_by_reason
    now = objects(fs)
    assert sorted(set(now) - set(objs)) == ["data/shards/_state/windows/0000000001.json",
                                            "data/shards/manifest/part-0000000001.parquet",
                                            "data/shards/shard-000003.tar", "data/shards/shard-000004.tar"]
    assert all(now[k] == v for k, v in objs.items() if k.endswith(".tar"))
    with open_input("s3://data/shards/manifest/part-0000000001.parquet") as f:
        assert sorted(set(pq.read_table(f).column("shard").to_pylist())) == ["shard-000003.tar", "shard-000004.tar"]
