"""Reruns and the end of a build read the window records' roll-ups, not the journal.

One small build (2 good videos, a 404, a 503 that recovers, a truncated body; shuffle
windows of 2) is shared. Its copies are rerun with the journal of the recorded windows
deleted: a rerun must redo nothing and give the same errors.parquet and summary counts, and
--retry-errors must still find the retryable failures and let their latest result win.
Records written before the roll-up existed (no `rollup` field) fall back to the journal.
"""
import glob
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import engine
from pipeline.config import load_config
from pipeline.engine import RETRY_WINDOW_BASE, build

CONFIG = {"segment.min_unit_s": 2.0, "shards.max_samples": 2, "shards.shuffle_window": 2,
          "asr.actors": 1, "max_inflight": 2, "progress_s": 60, "download.retries": 1,
          "download.backoff_s": 0.05, "download.read_timeout_s": 1.5, "download.connect_timeout_s": 2}
# row order -> windows: 0 = [good0, e404], 1 = [down, good1], 2 = [short]
ROWS = [("good0", "/media/video_000.mp4"), ("e404", "/404"), ("down", "/down/video_002.mp4"),
        ("good1", "/media/video_001.mp4"), ("short", "/short")]
COUNTS = ("videos_total", "videos_ok", "videos_failed", "failed_by_reason", "samples", "shards",
          "audio_hours", "duplicates_dropped", "seed")


def counts(summary) -> dict:
    return {k: getattr(summary, k) for k in COUNTS}


def errors_of(out) -> list[dict]:
    return pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()


def shards_of(out) -> dict:
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".tar")}


def drop_journal(out) -> None:
    shutil.rmtree(os.path.join(out, "_state", "videos"))
    os.makedirs(os.path.join(out, "_state", "videos"))


def strip_rollups(out) -> int:
    """Make every window record look like one written before the roll-up existed."""
    paths = glob.glob(os.path.join(out, "_state", "windows", "*.json"))
    for path in paths:
        with open(path) as f:
            rec = json.load(f)
        rec.pop("rollup", None)
        with open(path, "w") as f:
            json.dump(rec, f)
    return len(paths)


@pytest.fixture
def journal_reads(monkeypatch):
    """Every journal file the driver opens, as (window, video id)."""
    reads = []
    load = engine.State.load_result

    def counted(self, window, vid):
        reads.append((window, vid))
        return load(self, window, vid)
    monkeypatch.setattr(engine.State, "load_result", counted)
    return reads


@pytest.fixture
def server_up(server):
    server.state["down"] = False                  # the 503 server has recovered
    yield server
    server.state["down"] = True


@pytest.fixture(scope="module")
def first(tmp_path_factory, corpus, server, ray_local):
    d = tmp_path_factory.mktemp("rollup")
    (d / "urls.jsonl").write_text("\n".join(json.dumps({"id": k, "url": server.url + p}) for k, p in ROWS))
    out = str(d / "out")
    summary = build(str(d / "urls.jsonl"), out, load_config(overrides=CONFIG))
    assert summary.videos_ok == 2
    assert summary.failed_by_reason == {"http_4xx": 1, "http_5xx": 1, "truncated": 1}
    return str(d / "urls.jsonl"), out, summary


def copy_of(first, tmp_path, name="copy") -> str:
    dst = str(tmp_path / name)
    shutil.copytree(first[1], dst)
    return dst


def test_rerun_without_journal_redoes_nothing_and_reports_the_same(first, tmp_path, server, journal_reads):
    urls, out, summary = first
    copy = copy_of(first, tmp_path)
    drop_journal(copy)
    hits = dict(server.hits)
    again = build(urls, copy, load_config(overrides=CONFIG))
    assert again.processed_videos == 0 and again.resumed_videos == 0
    assert journal_reads == []                    # not one journal file opened
    assert dict(server.hits) == hits              # nothing fetched
    assert counts(again) == counts(summary)
    assert errors_of(copy) == errors_of(out)
    assert shards_of(copy) == shards_of(out)


def test_retry_errors_uses_the_rollup_and_the_latest_result_wins(first, tmp_path, server_up, journal_reads):
    urls, out, summary = first
    copy = copy_of(first, tmp_path)
    drop_journal(copy)
    retried = build(urls, copy, load_config(overrides=CONFIG), retry_errors=True)
    # only the retryable failures were redone, found without their (deleted) journal files
    assert retried.processed_videos == 2
    assert {v for _, v in journal_reads} == {"down", "short"}       # the retry window's writing
    assert os.path.exists(os.path.join(copy, "_state", "windows", f"{RETRY_WINDOW_BASE:010d}.json"))
    want = {"videos_total": 5, "videos_ok": 3, "videos_failed": 2,
            "failed_by_reason": {"http_4xx": 1, "truncated": 1}, "samples": summary.samples + 3}
    assert {k: v for k, v in counts(retried).items() if k in want} == want
    assert [(e["id"], e["reason"]) for e in errors_of(copy)] == [("e404", "http_4xx"), ("short", "truncated")]
    after_retry = counts(retried), errors_of(copy)

    # the retry window's result supersedes the original window's, with no journal at all
    drop_journal(copy)
    journal_reads.clear()
    again = build(urls, copy, load_config(overrides=CONFIG))
    assert again.processed_videos == 0 and journal_reads == []
    assert (counts(again), errors_of(copy)) == after_retry

    # a second retry: `short` fails again in a second retry window, `down` (now ok) is left alone
    server_up.state["down"] = True
    hits = dict(server_up.hits)
    twice = build(urls, copy, load_config(overrides=CONFIG), retry_errors=True)
    assert twice.processed_videos == 1
    assert {p for p in server_up.hits if server_up.hits[p] != hits.get(p)} == {"/short"}
    assert os.path.exists(os.path.join(copy, "_state", "windows", f"{RETRY_WINDOW_BASE + 1:010d}.json"))
    assert (counts(twice), errors_of(copy)) == after_retry


def test_records_without_rollup_fall_back_to_the_journal(first, tmp_path, server_up, journal_reads):
    urls, out, summary = first
    copy = copy_of(first, tmp_path)
    assert strip_rollups(copy) == 3
    again = build(urls, copy, load_config(overrides=CONFIG))
    assert again.processed_videos == 0
    assert counts(again) == counts(summary) and errors_of(copy) == errors_of(out)
    assert len(journal_reads) == len(ROWS)                          # finalize read the journal

    # a retry over old records: redo decided from the journal, new retry window has a roll-up
    retried = build(urls, copy, load_config(overrides=CONFIG), retry_errors=True)
    assert retried.processed_videos == 2
    assert (retried.videos_total, retried.videos_ok) == (5, 3)
    assert retried.failed_by_reason == {"http_4xx": 1, "truncated": 1}
    after_retry = counts(retried), errors_of(copy)

    # an old retry window too: its videos' journals are under their original windows
    assert strip_rollups(copy) == 4
    again = build(urls, copy, load_config(overrides=CONFIG))
    assert again.processed_videos == 0
    assert (counts(again), errors_of(copy)) == after_retry
