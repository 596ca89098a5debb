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


def test_build_to_s3_then_stream_training_from_it(s3, corpus, server, ray_local, tmp_path):
    fs = pafs.FileSystem.from_uri("s3://data/x")[0]
    with fs.open_output_stream("data/lists/urls.txt") as f:
        f.write("".join(f"{server.url}/media/video_{i:03d}.mp4\n" for i in range(2)).encode()
                + f"{server.url}/404\n".encode())
    cfg = load_config(overrides={"segment.min_unit_s": 2.0, "shards.max_samples": 2,
                                 "work_dir": str(tmp_path / "work")})
    summary = build("s3://data/lists/urls.txt", "s3://data/shards", cfg)
    assert (summary.videos_ok, summary.samples, summary.shards) == (2, 6, 3)

    names = sorted(i.path for i in fs.get_file_info(pafs.FileSelector("data/shards", recursive=True))
                   if i.type == pafs.FileType.File)
    assert names == ["data/shards/errors.parquet", "data/shards/manifest/part-0000000000.parquet",
                     "data/shards/shard-000000.tar", "data/shards/shard-000001.tar",
                     "data/shards/shard-000002.tar", "data/shards/summary.json"]
    with open_input("s3://data/shards/summary.json") as f:
        assert json.load(f)["samples"] == 6
    with open_input("s3://data/shards/errors.parquet") as f:
        assert pq.read_table(f).column("reason").to_pylist() == ["http_4xx"]
    assert not [p for p in os.listdir(tmp_path / "work") if p.endswith(".tar")]   # uploaded, not kept

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
