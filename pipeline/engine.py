"""The Ray wiring, in one place: schedules video tasks and ASR actors, writes shards.

Flow: the driver streams the URL list, submits one task per video (stages 2-7 in
pipeline.process), each task forwards its audio to an ASR actor (stage 5: one model per
actor), and the results (small records + clip bytes) come back to the driver, which stages
the clips on disk and journals the video. When every video of a shuffle window is journaled,
the window's samples are shuffled and written as shards (stage 8) and a manifest part
(stage 9); the staged clips are then deleted.

Crash safety: the journal (`_state/videos/W/ID.json`) is written after the clips it names,
and a window record (`_state/windows/`) after its shards and manifest part. A rerun skips
journaled videos and recorded windows, so at most the videos in flight are redone, and it
rewrites an unrecorded window with exactly the same bytes (same seed, same shard numbers).

With a remote `--out` (s3://...) the journal and staging live in a local work_dir; outputs
are uploaded, and so are config.json and each window record (`OUT/_state/windows/W.json`,
uploaded after the window's shards and manifest part, then renamed into place locally). A
build starts by merging the remote records into the local ones, so a rerun from another
machine or an empty work_dir skips every recorded window and numbers its shards after
theirs; only the videos of unrecorded windows, whose journal was local, are redone.

The window record carries a roll-up of its videos' results (ok count and audio, each failure's
ErrorRow): a rerun and the end of a build read the window records, O(windows), and open the
journal only of videos in unrecorded windows (and of windows recorded by earlier versions,
which have no roll-up). A retried video's journal stays under its original window, its new
result lands in a retry window: the highest-numbered window that lists a video has its
latest result, and that one counts.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

import ray

from pipeline import asr as asr_stage
from pipeline import storage
from pipeline.config import BuildConfig
from pipeline.errors import StageError
from pipeline.process import failed, process_video
from pipeline.shards import plan_window, sample_json, sample_txt, shard_name, write_shard
from pipeline.urls import read_url_list
from schemas import (SCHEMA_VERSION, ErrorRow, FailedVideo, ManifestRow, RunSummary, ShardStats,
                     UrlRow, VideoResult, WindowRecord, WindowRollup, from_dict, to_table)

RETRY_WINDOW_BASE = 1_000_000_000     # retry windows are numbered after every input window


# ----------------------------------------------------------------------------- Ray actors/tasks

class AsrActor:
    """Holds one faster-whisper model; serves one transcription at a time."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = asr_stage.load_model(cfg)

    def transcribe(self, pcm):
        try:
            return asr_stage.transcribe(self.model, pcm, self.cfg)
        except StageError as e:        # returned, not raised: keeps the reason code intact
            return (e.stage, e.reason, e.message)


def _video_task(row: UrlRow, cfg: BuildConfig, actors: list, first: int):
    def forward(pcm):
        # try the assigned actor, then the others: an actor lost with its node (or removed
        # from the pool by the engine) must not cost this video
        for i in range(len(actors)):
            actor = actors[(first + i) % len(actors)]
            try:
                out = ray.get(actor.transcribe.remote(pcm), timeout=cfg.asr.timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise StageError("asr", "deadline", f"ASR took longer than {cfg.asr.timeout_s}s") from None
            except ray.exceptions.RayActorError:
                continue
            if isinstance(out, tuple):
                raise StageError(*out)
            return out
        raise StageError("asr", "worker_died", f"all {len(actors)} ASR actors died")
    return process_video(row, cfg, forward)


def start_ray(address: str | None) -> None:
    """Join `address`; inside a Ray job (RAY_ADDRESS set) join the job's cluster; else start a
    private local instance (plain ray.init() would attach to any `ray start` on the machine)."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")


def _asr_gpus(cfg: BuildConfig, res: dict) -> float:
    if cfg.asr.num_gpus >= 0:
        return cfg.asr.num_gpus
    return 1.0 if res.get("GPU", 0) else 0.0


def asr_capacity(cfg: BuildConfig, res: dict, num_gpus: float) -> int:
    """ASR actors the cluster resources `res` can hold while keeping room for one video task."""
    by_cpu = int((res.get("CPU", 0) - cfg.task_cpus) // cfg.asr.num_cpus) if cfg.asr.num_cpus else 1 << 30
    by_gpu = int(res.get("GPU", 0) // num_gpus) if num_gpus else 1 << 30
    return max(1, min(by_cpu, by_gpu))


def asr_wanted(cfg: BuildConfig, res: dict, num_gpus: float) -> int:
    """The configured pool size: `asr.actors`, or one per GPU (one per 4 CPUs without GPUs)."""
    if cfg.asr.actors:
        return cfg.asr.actors
    return int(res.get("GPU", 0) / num_gpus) if num_gpus else max(1, int(res.get("CPU", 1)) // 4)


def asr_pool_target(current: int, cfg: BuildConfig, res: dict, num_gpus: float) -> int:
    """How many ASR actors the pool should have, given the cluster's resources `res` now.

    Shrink to what fits beside one video task (after a node loss, actors restarted on the
    survivors can take every CPU and starve the video tasks: a deadlock); grow back toward
    the configured size when there is room again (a node rejoined, the autoscaler added
    one); otherwise keep `current`. A pure function of its arguments."""
    cap = asr_capacity(cfg, res, num_gpus)
    if current > cap:
        return cap
    return max(current, min(asr_wanted(cfg, res, num_gpus), cap))


def start_asr_actors(cfg: BuildConfig, count: int | None = None, num_gpus: float | None = None) -> list:
    """Start `count` ASR actors (default: as many as the cluster should have now)."""
    res = ray.cluster_resources()
    num_gpus = _asr_gpus(cfg, res) if num_gpus is None else num_gpus
    n = asr_pool_target(0, cfg, res, num_gpus) if count is None else count
    actor_cls = ray.remote(AsrActor).options(num_cpus=cfg.asr.num_cpus, num_gpus=num_gpus,
                                             max_restarts=-1, max_task_retries=2, max_concurrency=1)
    return [actor_cls.remote(cfg.asr) for _ in range(n)]


# ----------------------------------------------------------------------------- on-disk state

def _write_json(path: str, obj) -> None:
    """Atomic JSON write: a crash leaves the old file or the new one, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class State:
    out: str            # local directory: the journal, staging, and the outputs before upload
    dest: str = ""      # where outputs go: `out` itself, or a remote URI (s3://...)

    def __post_init__(self):
        self.dest = self.dest or self.out
        for d in ("videos", "clips", "windows", "tmp"):
            os.makedirs(os.path.join(self.out, "_state", d), exist_ok=True)
        os.makedirs(os.path.join(self.out, "manifest"), exist_ok=True)

    def p(self, *parts: str) -> str:
        return os.path.join(self.out, "_state", *parts)

    def journal_path(self, window: int, vid: str) -> str:
        return self.p("videos", f"{window:06d}", f"{vid}.json")

    def load_result(self, window: int, vid: str) -> VideoResult | None:
        try:
            with open(self.journal_path(window, vid)) as f:
                return from_dict(VideoResult, json.load(f))
        except FileNotFoundError:
            return None

    def save_result(self, window: int, result: VideoResult, clips: list[bytes]) -> None:
        if clips:
            d = self.p("clips", result.video_id)
            os.makedirs(d, exist_ok=True)
            for s, data in zip(result.samples, clips):
                tmp = os.path.join(d, s.key + ".mp4.tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, os.path.join(d, s.key + ".mp4"))
        os.makedirs(os.path.dirname(self.journal_path(window, result.video_id)), exist_ok=True)
        _write_json(self.journal_path(window, result.video_id), dataclasses.asdict(result))

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.dest)

    def remote_path(self, local: str) -> str:
        """Where a file under `out` lives under a remote `dest`."""
        return storage.join(self.dest, *os.path.relpath(local, self.out).split(os.sep))

    def publish_copy(self, local: str) -> None:
        """Copy a state file (relative to `out`) to `dest` when that is remote; keep it here."""
        if self.remote:
            storage.upload(local, self.remote_path(local))

    def publish(self, local: str) -> None:
        """Move a finished output file (relative to `out`) to `dest` when that is remote."""
        if self.remote:
            self.publish_copy(local)
            os.unlink(local)

    def save_record(self, record: WindowRecord) -> None:
        """Record a finished window (call it after its shards and manifest part are written or
        uploaded). With a remote `dest` the record is uploaded first, then renamed into place
        here: the remote copy, which a rerun on any machine reads, is never behind this one."""
        path = self.p("windows", f"{record.window:010d}.json")
        if not self.remote:
            return _write_json(path, dataclasses.asdict(record))
        tmp = self.p("tmp", os.path.basename(path))
        _write_json(tmp, dataclasses.asdict(record))
        storage.upload(tmp, self.remote_path(path))
        os.replace(tmp, path)

    def merge_remote_records(self) -> tuple[int, int]:
        """With a remote `dest`, make the local and the remote window records the same set:
        download the records only the remote has (windows finished from another machine or
        another work_dir), upload those only this work_dir has (written before records were
        published). Returns (downloaded, uploaded). One listing plus a GET or PUT per missing
        record, 8 at a time."""
        if not self.remote:
            return 0, 0
        from concurrent.futures import ThreadPoolExecutor
        remote_dir = self.remote_path(self.p("windows"))
        is_record = re.compile(r"\d{10}\.json").fullmatch
        there = {n for n in storage.list_files(remote_dir) if is_record(n)}
        here = {n for n in os.listdir(self.p("windows")) if is_record(n)}
        down, up = sorted(there - here), sorted(here - there)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: storage.download(storage.join(remote_dir, n), self.p("windows", n)), down))
            list(pool.map(lambda n: storage.upload(self.p("windows", n), storage.join(remote_dir, n)), up))
        return len(down), len(up)

    def window_records(self) -> dict[int, WindowRecord]:
        out = {}
        for path in glob.glob(self.p("windows", "*.json")):
            with open(path) as f:
                rec = from_dict(WindowRecord, json.load(f))
            out[rec.window] = rec
        return out


@dataclass
class Tally:
    """The latest result of every recorded video, counted: what errors.parquet and the summary
    need, and which videos --retry-errors may redo."""
    ok: int = 0
    ok_audio_s: float = 0.0
    failed: dict[str, FailedVideo] = field(default_factory=dict)     # video id -> latest failure

    def add(self, r: VideoResult) -> None:
        if r.status == "ok":
            self.ok += 1
            self.ok_audio_s += r.audio_s
        else:
            self.failed[r.video_id] = FailedVideo(error=r.error, audio_s=r.audio_s)


def tally(state: State, records: dict[int, WindowRecord], read_journal: bool = True) -> Tally:
    """Count the recorded windows from their roll-ups: no journal is opened for them.

    A video's latest result is the one in the highest-numbered window that lists it (a retry
    window supersedes the video's original window and earlier retry windows). Only failed
    videos are ever redone, so a window's ok count is never superseded; its failures are,
    by any later window that lists them. A record without a roll-up (written by an earlier
    version) is counted from its videos' journals, which hold each video's latest result;
    with read_journal=False such records are left out.
    """
    t = Tally()
    later: set[str] = set()              # videos listed in a higher-numbered (retry) window
    home = None                          # video id -> original window, for old retry windows
    for w in sorted(records, reverse=True):
        rec = records[w]
        if rec.rollup is not None:
            t.ok += rec.rollup.videos_ok
            t.ok_audio_s += rec.rollup.ok_audio_s
            for f in rec.rollup.failed:
                if f.error.id not in later:
                    t.failed[f.error.id] = f
        elif read_journal:
            if w >= RETRY_WINDOW_BASE and home is None:
                home = {v: x for x, r in records.items() if x < RETRY_WINDOW_BASE for v in r.videos}
            for v in rec.videos:
                if v not in later:
                    r = state.load_result(home.get(v, w) if w >= RETRY_WINDOW_BASE else w, v)
                    if r is not None:
                        t.add(r)
        if w >= RETRY_WINDOW_BASE:
            later.update(rec.videos)
    return t


# ----------------------------------------------------------------------------- windows -> shards

def write_window(state: State, window: int, video_ids: list[str], journal_window: dict[str, int],
                 first_shard: int, cfg: BuildConfig) -> WindowRecord:
    """Shuffle the window's samples into shards, write them and the manifest part, record it."""
    results = [state.load_result(journal_window[v], v) for v in video_ids]
    ok = [r for r in results if r is not None and r.status == "ok"]
    by_key = {s.key: (r, s, n) for r in ok for s, n in zip(r.samples, r.clip_bytes)}
    plan = plan_window([(k, n) for k, (_, _, n) in by_key.items()], cfg.seed, window, cfg.shards)
    stats, manifest = [], []
    for j, keys in enumerate(plan if by_key else []):
        name = shard_name(cfg.shards, first_shard + j)
        members = []
        for key in keys:
            r, s, _ = by_key[key]
            members += [(f"{key}.json", sample_json(s)),
                        (f"{key}.mp4", state.p("clips", r.video_id, f"{key}.mp4")),
                        (f"{key}.txt", sample_txt(s))]
        size = write_shard(os.path.join(state.out, name), members)
        state.publish(os.path.join(state.out, name))
        stats.append(ShardStats(shard=name, window=window, samples=len(keys),
                                videos=len({by_key[k][0].video_id for k in keys}), bytes=size))
        for key in keys:
            r, s, n = by_key[key]
            manifest.append(ManifestRow(
                key=key, shard=name, video_id=r.video_id, url=r.url, index=s.index,
                source_start=s.source_start, source_end=s.source_end, duration=s.duration,
                video_duration=r.video.duration, num_units=len(s.units),
                num_words=sum(len(u.words) for u in s.units), language=s.language, bytes=n))
    import pyarrow.parquet as pq
    part = os.path.join(state.out, "manifest", f"part-{window:010d}.parquet")
    pq.write_table(to_table(manifest, ManifestRow), part + ".tmp")
    os.replace(part + ".tmp", part)
    state.publish(part)
    rollup = WindowRollup(videos_ok=len(ok), ok_audio_s=sum(r.audio_s for r in ok),
                          failed=[FailedVideo(error=r.error, audio_s=r.audio_s) for r in results
                                  if r is not None and r.status != "ok"])
    record = WindowRecord(window=window, first_shard=first_shard, videos=video_ids, shards=stats,
                          samples=len(manifest), rollup=rollup)
    state.save_record(record)                    # last: after the shards and the manifest part
    if not cfg.keep_staging:
        for v in video_ids:
            shutil.rmtree(state.p("clips", v), ignore_errors=True)
    return record


# ----------------------------------------------------------------------------- the build

@dataclass
class _Window:
    ids: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    complete: bool = False          # every row of the window has been read


def build(urls: str, out: str, cfg: BuildConfig, *, address: str | None = None,
          retry_errors: bool = False, log=print) -> RunSummary:
    t0 = time.time()
    if storage.is_remote(out):       # journal and staging stay local; outputs are uploaded,
        work = cfg.work_dir or os.path.join(os.path.expanduser("~/.cache/tvts-pipeline"),
                                            hashlib.sha1(out.encode()).hexdigest()[:16])
        state = State(work, dest=out)     # and so are the window records and config.json
    else:
        state = State(out)
    _write_json(state.p("config.json"), cfg.to_dict())
    state.publish_copy(state.p("config.json"))
    downloaded, uploaded = state.merge_remote_records()
    if downloaded or uploaded:
        log(f"[build] window records: {downloaded} fetched from {out}, {uploaded} published to it")
    records = state.window_records()
    # new shards are numbered after every recorded window's (records are written in window
    # order, so this is also their count)
    next_shard = max((r.first_shard + len(r.shards) for r in records.values()), default=0)
    # latest failure of each video of the recorded windows, from their roll-ups
    recorded_failures = tally(state, records, read_journal=False).failed if retry_errors else {}
    n_retry = sum(1 for w in records if w >= RETRY_WINDOW_BASE)
    retry_window = RETRY_WINDOW_BASE + n_retry
    start_ray(address)
    asr_gpus = _asr_gpus(cfg, ray.cluster_resources())
    actors = start_asr_actors(cfg, num_gpus=asr_gpus)
    # each actor has a stable slot id: tasks in flight hold the slot they were given, so the
    # per-actor in-flight counts stay right while the pool shrinks and grows under them
    new_slot = itertools.count()
    slots = [next(new_slot) for _ in actors]            # parallel to `actors`
    load = {s: 0 for s in slots}                        # slot -> tasks in flight on it
    task = ray.remote(_video_task).options(num_cpus=cfg.task_cpus, max_retries=cfg.task_retries,
                                           retry_exceptions=False)
    max_inflight = cfg.max_inflight or 2 * int(ray.cluster_resources().get("CPU", 1))
    windows: dict[int, _Window] = {}
    journal_window: dict[str, int] = {}         # video id -> window its journal lives under
    inflight: dict = {}                          # ref -> (row, window, actor slot, submitted at)
    counts = Counter()
    stats: dict = {}
    last_log = time.time()

    def target_window(row_window: int) -> int:
        return retry_window if row_window in records else row_window

    def finish(row: UrlRow, win: int, result: VideoResult, clips: list[bytes]) -> None:
        state.save_result(journal_window[row.id], result, clips)
        counts[result.status] += 1
        counts["audio_s"] += result.audio_s
        counts["samples"] += len(result.samples)
        windows[win].pending.discard(row.id)

    def flush_windows() -> None:
        nonlocal next_shard
        for w in sorted(windows):
            st = windows[w]
            if w == retry_window or not st.complete or st.pending:
                break                            # windows are written strictly in order
            rec = write_window(state, w, st.ids, journal_window, next_shard, cfg)
            next_shard += len(rec.shards)
            counts["shards"] += len(rec.shards)
            del windows[w]

    def collect(timeout: float) -> None:
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
        fit_pool()
        for ref in ready:
            row, win, slot, _ = inflight.pop(ref)
            if slot in load:
                load[slot] -= 1
            try:
                result, clips = ray.get(ref)
            except ray.exceptions.RayError as e:    # worker died past its retries, or cancelled
                result, clips = failed(row, "engine", "worker_died", str(e)[:300]), []
            finish(row, win, result, clips)
        now = time.time()
        for ref, (row, win, slot, since) in list(inflight.items()):
            if now - since > cfg.video_timeout_s * 1.2 + 30:   # the task's own deadline failed
                ray.cancel(ref, force=True)
                inflight.pop(ref)
                if slot in load:
                    load[slot] -= 1
                finish(row, win, failed(row, "engine", "deadline",
                                        f"task exceeded {cfg.video_timeout_s}s and was killed"), [])
        flush_windows()

    last_fit = time.time()

    def fit_pool() -> None:
        """Resize the ASR pool to the live cluster (asr_pool_target): after a node loss drop
        actors until one video task fits beside them, and start them again (up to the
        configured count) when a node joins. Checked every few seconds, not per result: it
        asks the GCS for the cluster's resources.

        Shrinking pops the newest actors and growing appends, so actors[0] is never removed
        by the pool: every task's copy of the list (taken when it was submitted) holds at
        least one live actor to fail over to. Tasks submitted earlier do not see new actors;
        later ones are sent to them first (no load yet)."""
        nonlocal last_fit
        if time.time() - last_fit < 5.0:
            return
        last_fit = time.time()
        target = asr_pool_target(len(actors), cfg, ray.cluster_resources(), asr_gpus)
        if target < len(actors):
            while len(actors) > target:
                ray.kill(actors.pop(), no_restart=True)
                del load[slots.pop()]
            log(f"[build] cluster shrank: {len(actors)} ASR actor(s) left")
        elif target > len(actors):
            for actor in start_asr_actors(cfg, target - len(actors), asr_gpus):
                actors.append(actor)
                slots.append(next(new_slot))
                load[slots[-1]] = 0
            log(f"[build] cluster grew: {len(actors)} ASR actor(s)")

    def progress(force: bool = False) -> None:
        nonlocal last_log
        if force or time.time() - last_log >= cfg.progress_s:
            last_log = time.time()
            el = time.time() - t0
            log(f"[build] {el:6.1f}s  videos ok {counts['ok']} failed {counts['failed']} "
                f"in flight {len(inflight)}  samples {counts['samples']}  shards {counts['shards']}  "
                f"audio {counts['audio_s'] / 60:.1f} min ({counts['audio_s'] / max(el, 1e-9):.1f}x real time)")

    for item in read_url_list(urls, cfg.download.allow_local_files, stats):
        row_window = item.row // cfg.shards.shuffle_window
        for w, st in windows.items():                       # rows come in order: earlier windows are full
            if w < row_window:
                st.complete = True
        vid = item.id
        journal_window[vid] = row_window
        if row_window in records:                           # window already in shards
            if not retry_errors:
                continue
            if records[row_window].rollup is None:          # recorded by an earlier version
                previous = state.load_result(row_window, vid)
                redo = (previous is not None and previous.status == "failed"
                        and previous.error is not None and previous.error.retryable)
            else:
                latest = recorded_failures.get(vid)
                redo = latest is not None and latest.error.retryable
            if not redo:
                continue
        else:
            previous = state.load_result(row_window, vid)
            redo = (previous is not None and retry_errors and previous.status == "failed"
                    and previous.error is not None and previous.error.retryable)
            if previous is not None and not redo:
                counts["resumed"] += 1
                windows.setdefault(row_window, _Window()).ids.append(vid)
                continue
        win = target_window(row_window)
        st = windows.setdefault(win, _Window())
        st.ids.append(vid)
        if isinstance(item, ErrorRow):
            st.pending.add(vid)
            row = UrlRow(id=vid, url=item.url, row=item.row)
            finish(row, win, failed(row, item.stage, item.reason, item.message), [])
            continue
        while len(inflight) >= max_inflight:
            collect(timeout=1.0)
            progress()
        ai = min(range(len(actors)), key=lambda i: load[slots[i]])     # least loaded actor
        load[slots[ai]] += 1
        st.pending.add(vid)
        inflight[task.remote(item, cfg, actors, ai)] = (item, win, slots[ai], time.time())
        progress()
    for st in windows.values():
        st.complete = True
    while inflight:
        collect(timeout=1.0)
        progress()
    flush_windows()
    if retry_window in windows:                             # retried videos: one more window
        rec = write_window(state, retry_window, windows[retry_window].ids, journal_window, next_shard, cfg)
        counts["shards"] += len(rec.shards)
    progress(force=True)
    for a in actors:
        ray.kill(a)
    return finalize(state, cfg, t0, counts, stats)


def finalize(state: State, cfg: BuildConfig, t0: float, counts: Counter, stats: dict) -> RunSummary:
    """errors.parquet and summary.json from the window records' roll-ups, plus the journal of
    any video in no recorded window (none after a finished run): O(windows) file reads."""
    import pyarrow.parquet as pq

    records = state.window_records()
    t = tally(state, records)
    for d in sorted(os.listdir(state.p("videos"))):
        if d.isdigit() and int(d) not in records:           # journaled, window not written
            for path in sorted(glob.glob(state.p("videos", d, "*.json"))):
                with open(path) as f:
                    t.add(from_dict(VideoResult, json.load(f)))
    errors = sorted((f.error for f in t.failed.values()), key=lambda e: e.row)
    reasons = Counter(e.reason for e in errors)
    audio_s = t.ok_audio_s + sum(f.audio_s for f in t.failed.values())
    pq.write_table(to_table(errors, ErrorRow), os.path.join(state.out, "errors.parquet"))
    state.publish(os.path.join(state.out, "errors.parquet"))
    wall = time.time() - t0
    summary = RunSummary(
        schema_version=SCHEMA_VERSION, videos_total=t.ok + len(errors), videos_ok=t.ok,
        videos_failed=len(errors), failed_by_reason=dict(sorted(reasons.items())),
        samples=sum(r.samples for r in records.values()),
        shards=sum(len(r.shards) for r in records.values()),
        audio_hours=round(audio_s / 3600, 4), wall_s=round(wall, 2),
        audio_s_per_wall_s=round(counts["audio_s"] / wall, 2),
        videos_per_hour=round((counts["ok"] + counts["failed"]) / wall * 3600, 1),
        processed_videos=counts["ok"] + counts["failed"], resumed_videos=counts["resumed"],
        duplicates_dropped=stats.get("duplicates", 0),
        seed=cfg.seed)
    _write_json(os.path.join(state.out, "summary.json"), dataclasses.asdict(summary))
    state.publish(os.path.join(state.out, "summary.json"))
    return summary
