"""Fast checks of the plain stage functions (no Ray, no ASR)."""
import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.segment import make_units, make_windows
from pipeline.shards import check_member_name, plan_window, read_shard, write_shard
from pipeline.urls import read_url_list, safe_id, url_id
from schemas import ErrorRow, Segment, Transcript, UrlRow, Word, arrow_schema, from_dict


# ----------------------------------------------------------------------------- stage 1

def _read(path, **kw):
    return list(read_url_list(str(path), **kw))


def test_url_lists_in_every_format_give_the_same_rows(tmp_path):
    urls = ["http://a.example/1.mp4", "https://b.example/2.mp4", "http://a.example/1.mp4"]
    (tmp_path / "l.txt").write_text("# comment\n" + "\n".join(urls) + "\n\n")
    (tmp_path / "l.csv").write_text("url,lang\n" + "\n".join(f"{u},en" for u in urls))
    (tmp_path / "l.tsv").write_text("url\tlang\n" + "\n".join(f"{u}\ten" for u in urls))
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps({"url": u, "lang": "en"}) for u in urls))
    pq.write_table(pa.table({"url": urls, "lang": ["en"] * 3}), tmp_path / "l.parquet")
    for name in ("l.txt", "l.csv", "l.tsv", "l.jsonl", "l.parquet"):
        stats = {}
        rows = list(read_url_list(str(tmp_path / name), stats=stats))
        assert [r.url for r in rows] == urls[:2], name
        assert [r.id for r in rows] == [url_id(u) for u in urls[:2]]
        assert [r.row for r in rows] == [0, 1]
        assert stats["duplicates"] == 1
        if name != "l.txt":
            assert rows[0].meta == {"lang": "en"}


def test_ids_are_kept_sanitised_and_unique(tmp_path):
    lines = [{"url": "http://x/1", "id": "clip-1"}, {"url": "http://x/2", "id": "a.b/c"},
             {"url": "http://x/3", "id": "a_b_c"}, {"url": "http://x/4", "id": "clip-1"}]
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    rows = _read(tmp_path / "l.jsonl")
    assert [r.id for r in rows][0] == "clip-1"
    assert rows[1].id.startswith("a_b_c-") and rows[2].id == "a_b_c"      # distinct after cleaning
    assert len(rows) == 3                                                 # duplicate id dropped
    assert safe_id("..") != ".." and "/" not in safe_id("../../etc")


def test_malformed_rows_and_schemes_become_error_rows(tmp_path):
    (tmp_path / "l.jsonl").write_text("\n".join([
        '{"url": "http://ok/1.mp4"}', '{"id": "nourl"}', "not json", "[1, 2]",
        '{"url": "file:///etc/passwd"}', '{"url": "ftp://host/x.mp4"}', '{"url": "/abs/path.mp4"}']))
    items = _read(tmp_path / "l.jsonl")
    assert isinstance(items[0], UrlRow)
    assert [(i.reason, i.row) for i in items[1:]] == [
        ("bad_row", 1), ("bad_row", 2), ("bad_row", 3), ("bad_scheme", 4), ("bad_scheme", 5), ("bad_scheme", 6)]
    assert all(isinstance(i, ErrorRow) and not i.retryable for i in items[1:])
    local = _read(tmp_path / "l.jsonl", allow_local_files=True)
    assert [type(i).__name__ for i in local[4:]] == ["UrlRow", "ErrorRow", "UrlRow"]


def test_csv_without_url_column_is_refused(tmp_path):
    (tmp_path / "l.csv").write_text("link\nhttp://x/1\n")
    with pytest.raises(ValueError, match="no 'url' column"):
        _read(tmp_path / "l.csv")


# ----------------------------------------------------------------------------- config and schemas

def test_config_file_and_flags_layer_and_reject_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: 7\nasr:\n  beam_size: 3\n  languages: [en, de]\nshards:\n  max_samples: 5\n")
    cfg = load_config(str(tmp_path / "c.yaml"), {"shards.max_samples": "9", "clip.keep_audio": "true"})
    assert (cfg.seed, cfg.asr.beam_size, cfg.asr.languages) == (7, 3, ["en", "de"])
    assert cfg.shards.max_samples == 9 and cfg.clip.keep_audio is True
    (tmp_path / "bad.yaml").write_text("asr:\n  beems: 3\n")
    with pytest.raises(ValueError, match="unknown config option asr.'beems'"):
        load_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "code.yaml").write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception):        # safe_load: a config never executes code
        load_config(str(tmp_path / "code.yaml"))


def test_records_validate_and_map_to_arrow():
    w = from_dict(Word, {"text": "hi", "start": 0, "end": 0.5, "prob": 0.9})
    assert w.start == 0.0 and isinstance(w.start, float)
    with pytest.raises(ValueError, match="missing field 'prob'"):
        from_dict(Word, {"text": "hi", "start": 0, "end": 0.5})
    with pytest.raises(ValueError, match="unknown fields"):
        from_dict(Word, {"text": "hi", "start": 0, "end": 0.5, "prob": 1, "x": 1})
    with pytest.raises(ValueError, match="expected str"):
        from_dict(Word, {"text": 3, "start": 0, "end": 0.5, "prob": 1})
    schema = arrow_schema(Transcript)
    assert schema.field("segments").type.value_type.field("words").type.value_type.field("start").type == pa.float64()
    assert schema.metadata[b"schema_version"] == b"1"


# ----------------------------------------------------------------------------- stage 6

def _transcript(sentences):
    """sentences: list of (start, seconds per word, n words): one ASR segment each."""
    segs = []
    for start, step, n in sentences:
        words = [Word(text=f"w{i}" + ("." if i == n - 1 else ""), start=start + i * step,
                      end=start + (i + 1) * step - 0.05, prob=0.9) for i in range(n)]
        segs.append(Segment(text=" ".join(w.text for w in words), start=words[0].start,
                            end=words[-1].end, avg_logprob=-0.1, no_speech_prob=0.0, words=words))
    return Transcript(language="en", language_prob=1.0, duration=100.0, model="m", segments=segs)


def test_units_follow_sentences_split_long_ones_and_merge_short_ones():
    cfg = load_config().segment
    t = _transcript([(0.0, 0.4, 10), (5.0, 0.4, 24), (16.0, 0.3, 5), (17.8, 0.3, 6)])
    units = make_units(t, cfg)
    spans = [(round(u.start, 2), round(u.end, 2), len(u.words)) for u in units]
    # sentence 1 (3.95 s) is one unit; the 9.6 s sentence is split at word boundaries into
    # units of at most 5 s; the two short sentences (1.45 s, 1.75 s) merge into one unit
    assert spans == [(0.0, 3.95, 10), (5.0, 9.75, 12), (9.8, 14.55, 12), (16.0, 19.55, 11)]
    assert [w.text for u in units for w in u.words] == [w.text for s in t.segments for w in s.words]


def test_windows_are_k_consecutive_units_with_relative_times():
    cfg = load_config(overrides={"segment.units_per_sample": 2}).segment
    t = _transcript([(0.0, 0.4, 10), (4.5, 0.4, 10), (9.0, 0.4, 10), (30.0, 0.4, 10), (34.5, 0.4, 10)])
    windows = make_windows(t, cfg)
    # the 17 s silence breaks the run: units 0-2 give one window (stride 2), units 3-4 another
    assert [(w.start, round(w.end, 2)) for w in windows] == [(0.0, 8.45), (30.0, 38.45)]
    assert windows[0].units[1].start == 4.5 and windows[1].units[0].start == 0.0
    assert windows[1].units[0].words[0].start == 0.0
    with pytest.raises(StageError, match="too_few_units"):
        make_windows(_transcript([(0.0, 0.4, 10)]), cfg)


# ----------------------------------------------------------------------------- stage 8

def test_shard_plan_is_a_seeded_balanced_permutation():
    from pipeline.config import ShardConfig
    items = [(f"v{v}_{i:04d}", 100) for v in range(10) for i in range(6)]
    cfg = ShardConfig(max_samples=7)
    plan = plan_window(items, seed=3, window=0, cfg=cfg)
    assert sorted(k for s in plan for k in s) == sorted(k for k, _ in items)
    assert len(plan) == 9 and {len(s) for s in plan} <= {6, 7}
    assert plan == plan_window(list(reversed(items)), seed=3, window=0, cfg=cfg)   # order-free
    assert plan != plan_window(items, seed=4, window=0, cfg=cfg)
    assert len(plan_window(items, 0, 0, ShardConfig(max_samples=1000, max_bytes=1000))) == 6


def test_shards_are_atomic_reproducible_and_refuse_unsafe_names(tmp_path):
    members = [("a_0001.json", b"{}"), ("a_0001.mp4", b"\0" * 5000), ("a_0001.txt", b"x\n")]
    p1, p2 = str(tmp_path / "s1.tar"), str(tmp_path / "s2.tar")
    write_shard(p1, members)
    write_shard(p2, members)
    assert open(p1, "rb").read() == open(p2, "rb").read()
    assert not os.path.exists(p1 + ".tmp")
    assert read_shard(p1) == {"a_0001": {"json": b"{}", "mp4": b"\0" * 5000, "txt": b"x\n"}}
    for bad in ("../x.json", "/etc/x.json", "a/b.json", "a..json", "x.exe"):
        with pytest.raises(ValueError, match="unsafe"):
            check_member_name(bad)
    with pytest.raises(ValueError, match="unsafe"):
        write_shard(str(tmp_path / "s3.tar"), [("../evil.json", b"{}")])
    assert not os.path.exists(tmp_path / "s3.tar")
    evil = tmp_path / "evil.tar"                      # a tar someone else wrote
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../evil.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ValueError, match="unsafe"):
        read_shard(str(evil))
