"""The whole build on a local Ray: real HTTP on 127.0.0.1, ffmpeg, faster-whisper tiny.en.

One build over 5 good inputs and every kind of bad input is shared by the tests below.
Stated tolerances (tiny.en on espeak-ng speech; measured 2026-11-23: worst unit WER 0.20,
overall 0.048, worst boundary error 0.46 s, mean 0.15 s): word error rate <= 0.25 per unit
and <= 0.08 overall; unit boundaries within 0.6 s of the true speech times, 0.25 s on average;
every frame sampled inside a unit's time range shows that unit's sentence colour.
"""
import dataclasses
import io
import json
import os
import shutil
import tarfile
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from pipeline import synth
from pipeline.config import load_config
from pipeline.engine import build
from pipeline.shards import read_shard

# espeak sentences last 3.0-3.8 s and whisper's word times trim their edges a little, so a
# unit may be a bit under 3 s: allow 2 s units, so that every sentence makes its own unit.
CONFIG = {"segment.min_unit_s": 2.0, "shards.max_samples": 4, "asr.actors": 1,
          "download.read_timeout_s": 1.5, "download.connect_timeout_s": 2, "download.retries": 2,
          "download.backoff_s": 0.05, "download.deadline_s": 20, "download.max_bytes": 5_000_000,
          "video_timeout_s": 120, "progress_s": 30}

GOOD = {f"good{i}": f"/media/video_{i:03d}.mp4" for i in range(4)} | {"flaky": "/flaky/video_000.mp4"}
BAD = {  # id -> (path or URL, expected reason)
    "e404": ("/404", "http_4xx"), "stall": ("/stall", "timeout"),
    "loop": ("/redirect-loop", "too_many_redirects"), "redirfile": ("/redirect-file", "bad_scheme"),
    "big": ("/big", "too_large"), "short": ("/short", "truncated"), "html": ("/html", "not_media"),
    "random": ("/media/random.mp4", "not_media"), "noaudio": ("/media/noaudio.mp4", "no_audio"),
    "silent": ("/media/silent.mp4", "no_speech"), "playlist": ("/media/playlist.mp4", "not_media"),
    "down": ("/down/video_001.mp4", "http_5xx"), "localfile": ("file:///etc/passwd", "bad_scheme"),
    "ftp": ("ftp://127.0.0.1/x.mp4", "bad_scheme"),
}


def url_list(path, server):
    rows = [{"id": k, "url": server.url + p, "source": "test"} for k, p in GOOD.items()]
    rows += [{"id": k, "url": p if "://" in p else server.url + p} for k, (p, _) in BAD.items()]
    rows.insert(3, {"id": "nourl", "source": "test"})                  # a malformed row
    rows.append(dict(rows[0]))                                          # a duplicate
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def shard_files(out):
    return sorted(f for f in os.listdir(out) if f.endswith(".tar"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus, server, ray_local):
    d = tmp_path_factory.mktemp("build")
    urls = url_list(d / "urls.jsonl", server)
    out = str(d / "out")
    summary = build(urls, out, load_config(overrides=CONFIG), log=print)
    return urls, out, summary


def test_summary_counts_every_input(built):
    _, out, summary = built
    assert summary.videos_ok == len(GOOD)
    assert summary.failed_by_reason == dict(Counter(r for _, r in BAD.values()) + Counter(bad_row=1))
    assert summary.duplicates_dropped == 1
    assert summary.samples == 3 * len(GOOD) and summary.shards == 4
    assert json.load(open(os.path.join(out, "summary.json"))) == dataclasses.asdict(summary)


def test_every_bad_input_has_its_error_row_and_no_sample(built):
    _, out, _ = built
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    got = {e["id"]: e["reason"] for e in errors}
    want = {k: r for k, (_, r) in BAD.items()} | {"nourl": "bad_row"}
    assert got == want
    assert all(e["message"] for e in errors)
    assert {e["id"] for e in errors if e["retryable"]} == {"stall", "short", "down"}
    keys = set(pq.read_table(os.path.join(out, "manifest")).column("video_id").to_pylist())
    assert keys == set(GOOD)


def test_shards_are_valid_tars_matching_the_manifest(built):
    _, out, _ = built
    manifest = pq.read_table(os.path.join(out, "manifest")).to_pylist()
    seen = {}
    for name in shard_files(out):
        with tarfile.open(os.path.join(out, name)) as tar:          # byte-level: a plain tar
            names = tar.getnames()
        samples = read_shard(os.path.join(out, name))
        assert len(names) == 3 * len(samples)
        for key, files in samples.items():
            assert set(files) == {"json", "mp4", "txt"}
            assert files["mp4"][4:8] == b"ftyp"
            seen[key] = (name, len(files["mp4"]))
    assert seen == {r["key"]: (r["shard"], r["bytes"]) for r in manifest}
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert os.listdir(os.path.join(out, "_state", "clips")) == []       # staging cleaned up

    import webdataset as wds
    ds = wds.WebDataset([os.path.join(out, n) for n in shard_files(out)], shardshuffle=False)
    assert sorted(s["__key__"] for s in ds) == sorted(seen)


def test_samples_of_a_video_are_spread_over_shards(built):
    _, out, _ = built
    manifest = pq.read_table(os.path.join(out, "manifest")).to_pylist()
    shards_of = defaultdict(set)
    for r in manifest:
        shards_of[r["video_id"]].add(r["shard"])
    assert all(len(s) >= 2 for s in shards_of.values()), shards_of
    # neighbours inside a shard rarely come from one video
    same = total = 0
    for name in shard_files(out):
        vids = [k.rsplit("_", 1)[0] for k in read_shard(os.path.join(out, name))]
        same += sum(a == b for a, b in zip(vids, vids[1:]))
        total += len(vids) - 1
    assert same <= total // 3


def _wer(ref: str, hyp: str) -> float:
    norm = lambda s: "".join(c for c in s.lower() if c.isalnum() or c.isspace()).split()  # noqa: E731
    r, h = norm(ref), norm(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


def test_transcripts_timings_and_frames_match_what_was_said_and_shown(built, corpus):
    import decord
    _, out, _ = built
    _, truth = corpus
    file_of = {k: os.path.basename(p) for k, p in GOOD.items()}
    errors, words, worst_edge, per_unit, edges = [], 0, 0.0, [], []
    for name in shard_files(out):
        for key, files in read_shard(os.path.join(out, name)).items():
            sample = json.loads(files["json"])
            assert sample["meta"] == {"source": "test"}
            assert files["txt"].decode().splitlines() == [u["text"] for u in sample["units"]]
            spoken = truth[file_of[sample["video_id"]]]
            vr = decord.VideoReader(io.BytesIO(files["mp4"]))
            fps = vr.get_avg_fps()
            for unit in sample["units"]:
                t0, t1 = sample["source_start"] + unit["start"], sample["source_start"] + unit["end"]
                said = max(spoken, key=lambda s: min(t1, s.end) - max(t0, s.start))
                wer = _wer(said.text, unit["text"])
                per_unit.append((wer, said.text, unit["text"]))
                errors.append(wer * len(said.text.split()))
                words += len(said.text.split())
                worst_edge = max(worst_edge, abs(t0 - said.start), abs(t1 - said.end))
                edges += [round(t0 - said.start, 2), round(t1 - said.end, 2)]
                # frames from the middle 60% of the unit's range show the sentence's colour
                span = unit["end"] - unit["start"]
                times = [unit["start"] + span * f for f in (0.2, 0.5, 0.8)]
                idx = [min(len(vr) - 1, int(t * fps)) for t in times]
                frames = vr.get_batch(idx).asnumpy()
                for frame in frames:
                    assert synth.nearest_colour(frame.reshape(-1, 3).mean(0)) == said.colour
    assert max(per_unit)[0] <= 0.25, max(per_unit)
    assert sum(errors) / words <= 0.08
    assert worst_edge <= 0.6, worst_edge
    assert sum(abs(e) for e in edges) / len(edges) <= 0.25


def test_same_seed_gives_identical_shards_and_another_seed_reorders(built, tmp_path):
    urls, out, _ = built
    again = str(tmp_path / "again")
    build(urls, again, load_config(overrides=CONFIG))
    assert shard_files(again) == shard_files(out)
    for name in shard_files(out):
        assert open(os.path.join(out, name), "rb").read() == open(os.path.join(again, name), "rb").read()


def test_retry_errors_reruns_only_retryable_failures(built, server, tmp_path):
    urls, out, _ = built
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    before = {n: open(os.path.join(copy, n), "rb").read() for n in shard_files(copy)}
    hits = dict(server.hits)
    server.state["down"] = False                  # the 503 server has recovered
    try:
        summary = build(urls, copy, load_config(overrides=CONFIG), retry_errors=True)
    finally:
        server.state["down"] = True
    assert summary.videos_ok == len(GOOD) + 1
    assert summary.samples == 3 * (len(GOOD) + 1)
    retried = {p for p in server.hits if server.hits[p] != hits.get(p)}
    assert retried == {"/down/video_001.mp4", "/stall", "/short"}      # nothing else was fetched
    for name, data in before.items():                                    # old shards untouched
        assert open(os.path.join(copy, name), "rb").read() == data
    new = [r for r in pq.read_table(os.path.join(copy, "manifest")).to_pylist() if r["video_id"] == "down"]
    assert len(new) == 3 and all(r["shard"] not in before for r in new)
    errors = {e["id"]: e["reason"] for e in pq.read_table(os.path.join(copy, "errors.parquet")).to_pylist()}
    assert "down" not in errors and errors["stall"] == "timeout"
