"""Streaming loader: WebDataset shards -> TVTS training batches, deterministic and resumable.

    loader = make_loader("out/shard-{000000..000099}.tar", LoaderConfig(batch_size=12),
                         rank=r, world_size=R, num_workers=4)
    loader.load_state_dict(ckpt["loader"])          # optional: resume at the exact next batch
    for batch in loader: ...                        # one epoch; iterate again for the next
    ckpt["loader"] = loader.state_dict()

Batch (a dict; B = batch_size, K = units, F = frames_per_unit, T = K*F, S = size, L = text_len)
    video      uint8 [B, T, 3, S, S]  frames k*F .. k*F+F-1 come from unit k's own time range,
                                      units in their TRUE (temporal) order; not normalised
    text_ids   long  [B, K, L]        the K unit transcripts in SHUFFLED order
    text_mask  bool  [B, K, L]        True = real token
    order      long  [B, K]           order[b, i] = true position of the i-th shuffled transcript,
                                      i.e. text_ids[b, i] is the transcript of unit order[b, i];
                                      true order: t = empty_like(x); t[b, order[b]] = x[b]. It is
                                      also the per-transcript class label of the sorting task.
    tube_mask  bool  [B, N]           N = (S/patch)^2, True = patch kept; one mask per sample,
                                      shared by all T frames; N - round(N*mask_ratio) kept
    keys       list[str]              sample keys (of the stand-in for an unusable sample)
    valid      bool  [B]              False where the slot holds a stand-in (see below)
    errors     list[str]              "key: reason: message" for each unusable sample

Order (a pure function of seed, epoch, world_size and the shard list; never of the workers)
 1. Every shard's sample count is known up front: from the build's manifest/ (parquet, one row
    per sample with its shard) or, without one, by reading the tar headers once at start-up.
 2. The epoch shuffles the shard order with (seed, epoch) and lays all M samples end to end.
 3. Rank r takes the contiguous share [r*M/R, (r+1)*M/R) and is cut or padded to exactly
    nb batches, nb the same on every rank (DDP needs equal batch counts):
      pad=True  (default): nb = ceil(M / (R*B)); a short rank repeats its own first samples,
                cyclically. At most B samples are repeated per rank and epoch.
      pad=False: nb = floor(M / (R*B)); the tail of each share is dropped (< B+1 per rank;
                 different samples each epoch, as the shard order changes).
 4. The rank's nb batches are dealt round-robin to `streams` (P) logical streams: batch i
    belongs to stream i % P. Stream p owns a contiguous run of the rank's samples (so it
    reads few shards, front to back) and shuffles them with a bounded buffer seeded by
    (seed, epoch, rank, p). The buffer's output order depends on the RNG only, not on the
    bytes, so it is computed up front as a permutation (`shuffle_order`).
 5. DataLoader workers fetch batches round-robin; worker w of W (after `start` batches
    already consumed) makes batches start+w, start+w+W, ... When W divides P a worker reads
    only its own streams; otherwise some tar bytes are read by several workers (only the
    needed samples are kept and decoded). Use a worker count that divides `streams`.
 6. Per-sample randomness (frame jitter, crop, flip, transcript shuffle, tube mask) comes
    from (seed, epoch, rank, batch index, slot): batch i is the same bytes whoever makes it.

State: {"epoch", "batches"} (batches handed out this epoch on this rank) plus what the order
depends on, which load_state_dict checks. Resuming re-creates the epoch's order and starts at
batch `batches`, on any number of workers. Shards holding no needed sample are not opened;
a shard that is only partly consumed is read again from its start (bytes, not decoding).

A sample that cannot be used (bad json, bad mp4, missing member, unreadable shard) is logged
and its slot is filled with a copy of a good sample of the same batch (or zeros if none),
with valid[b] = False, so batch counts and shapes never change.

Decoding (pipeline.decode): LoaderConfig.decoder = "decord" (default, CPU) or "torchcodec"
(CPU, or NVDEC with decode_device="cuda"); both decode the frames the same frame_indices call
picks. With decode_device="cuda" the crop/resize run on the GPU and `video` comes out already
on the GPU (the other tensors stay on the CPU); since CUDA cannot be used in forked DataLoader
workers, StreamLoader then makes the batches in the main process (num_workers forced to 0, with a
warning). The default stays decord on the CPU until a GPU measurement says otherwise
(docs/benchmarks.md): the builder's clips are small (256 px short side) and the loader seeks a
few frames per clip, the case where torchcodec's own benchmarks show NVDEC slower than the CPU.
"""
from __future__ import annotations

import collections
import glob
import hashlib
import json
import logging
import os
import random
import re
import tarfile
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from pipeline.decode import BadSample, DECODERS, check_decoder, crop_resize, frame_indices, require_decoder
from pipeline.shards import check_member_name
from pipeline.text import ByteTokenizer
from schemas import Sample, Unit, from_dict

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_MEMBER_BYTES = 1 << 30        # a header claiming more is corrupt, not a clip


@dataclass
class LoaderConfig:
    batch_size: int = 12          # B, per rank
    units: int = 4                # K transcripts per sample
    frames_per_unit: int = 3      # F: T = K * F frames, each from its own unit's time range
    size: int = 224               # S: frames are S x S
    patch: int = 16               # tube mask over (S / patch)^2 spatial patches
    mask_ratio: float = 0.5       # fraction of patches dropped (the same ones in every frame)
    text_len: int = 32            # L tokens per transcript (used when no tokenizer is passed)
    train: bool = True            # jittered frames, random crop and flip; else uniform, centre crop
    crop_scale: float = 224 / 268  # train crop side / short side (TVTS: short side 268, crop 224)
    flip: bool = True             # random horizontal flip when training
    shuffle: bool = True          # shuffle shard order and samples (False: file order per stream)
    shuffle_buffer: int = 32      # samples per stream in the shuffle buffer
    streams: int = 8              # P logical streams per rank; workers should divide it
    pad: bool = True              # equal batches per rank by repeating (True) or dropping samples
    seed: int = 0
    decode_threads: int = 1       # decoder threads per sample (1: one core per DataLoader worker)
    timeout_s: float = 60.0       # http(s) connect/read timeout
    decoder: str = "decord"       # "decord" or "torchcodec" (pipeline.decode)
    decode_device: str = "cpu"    # "cpu", or "cuda[:N]" with torchcodec (NVDEC; see the docstring)

    def __post_init__(self):
        check_decoder(self.decoder, self.decode_device)


# ----------------------------------------------------------------------------- URLs and bytes

_BRACE = re.compile(r"\{([^{}]*)\}")


def _braces(s: str) -> list[str]:
    """'a-{000..002}.tar' -> 3 names; '{x,y}' -> 2 names; other braces stay literal."""
    m = _BRACE.search(s)
    if not m:
        return [s]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        alts = [str(k).zfill(len(a)) for k in range(int(a), int(b) + 1)]
    elif "," in body:
        alts = body.split(",")
    else:
        alts = [m.group(0)]
    return [s[:m.start()] + alt + tail for alt in alts for tail in _braces(s[m.end():])]


def expand_urls(urls: str | Iterable[str]) -> list[str]:
    """A URL/path, a brace pattern, a local glob, or a list of them -> the list of shards."""
    out: list[str] = []
    for u in [urls] if isinstance(urls, str) else urls:
        for v in _braces(str(u)):
            if "://" not in v and any(c in v for c in "*?["):
                found = sorted(glob.glob(v))
                if not found:
                    raise FileNotFoundError(f"no shard matches {v!r}")
                out += found
            else:
                out.append(v)
    return out


def open_url(url: str, timeout: float = 60.0):
    """A readable binary stream. http(s) streams from the socket (nothing is copied to disk);
    other schemes (s3://, gs://, hdfs://, file://...) go through pyarrow's filesystems."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=timeout)
    if "://" in url:
        import pyarrow.fs
        fs, path = pyarrow.fs.FileSystem.from_uri(url)
        return fs.open_input_stream(path)
    return open(url, "rb")


class _TarCursor:
    """The samples of one tar stream, front to back; a sample = consecutive members with one key.

    read(pos) returns sample number `pos`, skipping (not reading) the members before it;
    positions must increase from call to call.
    """

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.raw = open_url(url, timeout)
        try:
            self.tar = tarfile.open(fileobj=self.raw, mode="r|*")
        except BaseException:
            self.raw.close()
            raise
        self.key, self.pos, self.next_pos, self.peek = None, -1, 0, None

    def read(self, pos: int) -> tuple[str, dict[str, bytes]]:
        key, files = None, {}
        while True:
            m, self.peek = self.peek or self.tar.next(), None
            if m is None:
                break
            if not m.isfile():
                raise ValueError(f"member {m.name!r} is not a regular file")
            k, ext = check_member_name(m.name).split(".", 1)
            if k != self.key:
                self.key, self.pos = k, self.pos + 1
            if self.pos > pos:            # first member of the next sample: keep it for later
                self.peek = m
                break
            if self.pos == pos:
                if m.size > MAX_MEMBER_BYTES:
                    raise ValueError(f"member {m.name!r} claims {m.size} bytes")
                key = k
                files[ext] = self.tar.extractfile(m).read()
        self.next_pos = pos + 1
        if key is None:
            raise LookupError(f"sample #{pos} is missing (the shard has {self.pos + 1})")
        return key, files

    def close(self) -> None:
        for f in (self.tar, self.raw):
            try:
                f.close()
            except Exception:
                pass


def count_samples(url: str, timeout: float = 60.0) -> int:
    """Samples in a shard without a manifest. A local tar is read header by header (seeks);
    anything else is streamed through once, which costs a full read: prefer a manifest."""
    path = url[len("file://"):] if url.startswith("file://") else url
    if "://" not in path:
        with tarfile.open(path) as tar:
            names = tar.getnames()
    else:
        log.warning("counting %s by reading it whole (no manifest)", url)
        with open_url(url, timeout) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            names = [m.name for m in tar]
    n, last = 0, None
    for name in names:
        key = check_member_name(name).split(".", 1)[0]
        n, last = n + (key != last), key
    return n


def read_manifest(path: str) -> dict[str, int]:
    """{shard file name: sample count} from a manifest directory/file (columns key, shard)."""
    import pyarrow.parquet as pq
    shards = pq.read_table(path, columns=["shard"]).column("shard").to_pylist()
    return dict(collections.Counter(os.path.basename(s) for s in shards))


# ----------------------------------------------------------------------------- the epoch's order

def shuffle_order(n: int, size: int, seed) -> list[int]:
    """Output order of a bounded shuffle buffer of `size` fed inputs 0..n-1: output t is input
    order[t]. At most `size` inputs are held at once and output t needs inputs < t + size."""
    r = random.Random(repr(seed))
    if size <= 1:
        return list(range(n))
    out, buf = [], []
    for k in range(n):
        if len(buf) < size:
            buf.append(k)
        else:
            j = r.randrange(size)
            out.append(buf[j])
            buf[j] = k
    r.shuffle(buf)
    return out + buf


@dataclass
class _Layout:
    """One rank's epoch: nb batches over `items`, flat indices into the epoch's sample list."""
    nb: int
    shard_order: np.ndarray       # shard (index into urls) at each place of the epoch's list
    cum: np.ndarray               # cum[s]: flat index of the first sample of place s (len n + 1)
    items: np.ndarray             # nb * B flat indices, this rank's samples in stream-input order

    def where(self, flat: int) -> tuple[int, int]:
        """Flat index -> (shard, sample number inside that shard)."""
        s = int(np.searchsorted(self.cum, flat, side="right")) - 1
        return int(self.shard_order[s]), int(flat - self.cum[s])


def _stream_range(nb: int, streams: int, p: int) -> tuple[int, int]:
    """Batches [first, first + n) of the rank's contiguous list belong to stream p."""
    sizes = [len(range(q, nb, streams)) for q in range(streams)]
    return sum(sizes[:p]), sizes[p]


# ----------------------------------------------------------------------------- one sample

def tube_mask(num_patches: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """bool [N], True = kept: N - round(N * ratio) patches (at least one), chosen at random."""
    keep = min(num_patches, max(1, num_patches - int(round(num_patches * ratio))))
    mask = np.zeros(num_patches, dtype=bool)
    mask[rng.choice(num_patches, keep, replace=False)] = True
    return mask


def read_units(raw: bytes) -> list[Unit]:
    """The units of a sample's KEY.json, validated against the shard schema (schemas.Sample)."""
    try:
        return from_dict(Sample, json.loads(raw)).units
    except (ValueError, TypeError, KeyError) as e:   # JSONDecodeError is a ValueError
        raise BadSample("bad_json", f"{type(e).__name__}: {e}"[:200]) from None


def decode_sample(files: dict[str, bytes], cfg: LoaderConfig, tokenizer, rng: np.random.Generator) -> dict:
    """One sample's tensors: video [T, 3, S, S] uint8 (on cfg.decode_device) and its K
    transcripts, shuffled."""
    if "json" not in files or "mp4" not in files:
        raise BadSample("missing_member", f"has {sorted(files)}, needs json and mp4")
    units = read_units(files["json"])[: cfg.units]
    if len(units) < cfg.units:
        raise BadSample("too_few_units", f"{len(units)} units, need {cfg.units}")
    spans = [(u.start, u.end) for u in units]

    def pick(fps: float, n_frames: int) -> list[int]:
        return frame_indices(spans, fps, n_frames, cfg.frames_per_unit, rng if cfg.train else None)

    _, frames = DECODERS[cfg.decoder](files["mp4"], pick, threads=cfg.decode_threads,
                                      device=cfg.decode_device)
    video = crop_resize(frames, cfg.size, rng, cfg.train, cfg.crop_scale, cfg.flip)
    order = rng.permutation(cfg.units)            # order[i] = true position of shuffled text i
    ids, mask = tokenizer([units[o].text for o in order])
    return {"video": video, "text_ids": ids, "text_mask": mask,
            "order": torch.from_numpy(order), "tube_mask": torch.from_numpy(tube_mask(
                (cfg.size // cfg.patch) ** 2, cfg.mask_ratio, rng))}


# ----------------------------------------------------------------------------- the dataset

@dataclass
class _Miss:
    key: str
    reason: str


class _StreamReader:
    """Pulls one stream's inputs in order, opening shards lazily and keeping only needed ones.

    Because the shuffle order is known, a worker knows exactly which inputs it will emit: the
    others are never read into memory, and a shard holding none of them is never opened.
    """

    def __init__(self, ds: "ShardStream", lay: _Layout, items: np.ndarray, needed: set[int], bad: dict):
        self.ds, self.lay, self.items, self.needed, self.bad = ds, lay, items, needed, bad
        self.next_in, self.store, self.cursor, self.cursor_shard = 0, {}, None, -1

    def get(self, k: int):
        while self.next_in <= k:
            j, self.next_in = self.next_in, self.next_in + 1
            if j in self.needed:
                self.store[j] = self._fetch(int(self.items[j]))
        return self.store.pop(k)

    def _fetch(self, flat: int):
        shard, pos = self.lay.where(flat)
        url = self.ds.urls[shard]
        name = f"{os.path.basename(url)}#{pos}"
        if shard in self.bad:
            return _Miss(name, self.bad[shard])
        for attempt in (1, 2):                   # a second try re-opens (an idle http stream may drop)
            try:
                if self.cursor is None or self.cursor_shard != shard or pos < self.cursor.next_pos:
                    self.close()
                    self.cursor, self.cursor_shard = _TarCursor(url, self.ds.cfg.timeout_s), shard
                return self.cursor.read(pos)
            except LookupError as e:              # the shard holds fewer samples than counted
                log.warning("%s: %s", name, e)
                return _Miss(name, f"missing: {e}")
            except Exception as e:                # unreachable, truncated or corrupt tar
                self.close()
                if attempt == 2:
                    self.bad[shard] = f"shard_unreadable: {type(e).__name__}: {e}"
                    log.warning("shard %s unreadable at sample #%d: %s", url, pos, e)
                    return _Miss(name, self.bad[shard])

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()
        self.cursor, self.cursor_shard = None, -1


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's batches of one epoch, as an IterableDataset of ready batch dicts.

    Use it with DataLoader(batch_size=None) -- or through StreamLoader, which also keeps the
    resume state. `epoch` and `start` (batches to skip) are read when iteration starts.
    """

    def __init__(self, urls: str | Iterable[str], cfg: LoaderConfig | None = None, *, rank: int = 0,
                 world_size: int = 1, manifest: str | None = None, tokenizer=None):
        self.cfg = cfg or LoaderConfig()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if self.cfg.size % self.cfg.patch:
            raise ValueError(f"size {self.cfg.size} is not a multiple of patch {self.cfg.patch}")
        require_decoder(self.cfg.decoder, self.cfg.decode_device)   # here, not in a worker
        self.urls = expand_urls(urls)
        self.rank, self.world_size = rank, world_size
        self.tokenizer = tokenizer or ByteTokenizer(self.cfg.text_len)
        self.epoch, self.start = 0, 0
        self.unreadable: dict[str, str] = {}      # shards that could not be counted
        self.counts = np.array(self._counts(manifest), dtype=np.int64)
        self.num_samples = int(self.counts.sum())
        R, B = world_size, self.cfg.batch_size
        self.num_batches = (-(-self.num_samples // (R * B)) if self.cfg.pad
                            else self.num_samples // (R * B))
        # what the order depends on besides (seed, epoch): resuming with other values is refused
        ident = json.dumps([[os.path.basename(u), int(n)] for u, n in zip(self.urls, self.counts)])
        self.dataset_id = hashlib.sha1(ident.encode()).hexdigest()[:16]

    def _counts(self, manifest: str | None) -> list[int]:
        # A manifest found beside the first shard only speaks for shards in that directory;
        # one passed explicitly speaks for every shard of the same file name.
        scope = None
        if manifest is None and self.urls and "://" not in self.urls[0]:
            scope = os.path.dirname(os.path.abspath(self.urls[0]))
            manifest = os.path.join(scope, "manifest") if os.path.isdir(os.path.join(scope, "manifest")) else None
        known = read_manifest(manifest) if manifest else {}
        counts = []
        for url in self.urls:
            in_scope = scope is None or ("://" not in url and os.path.dirname(os.path.abspath(url)) == scope)
            n = known.get(os.path.basename(url)) if in_scope else None
            if n is None:
                try:
                    n = count_samples(url, self.cfg.timeout_s)
                except Exception as e:            # its samples simply do not exist this run
                    log.warning("shard %s unreadable, left out: %s", url, e)
                    self.unreadable[url] = f"{type(e).__name__}: {e}"
                    n = 0
            counts.append(n)
        return counts

    # -- the order
    def layout(self, epoch: int) -> _Layout:
        c = self.cfg
        n = len(self.urls)
        order = (np.random.default_rng((c.seed, epoch)).permutation(n) if c.shuffle
                 else np.arange(n))
        cum = np.concatenate([[0], np.cumsum(self.counts[order])]).astype(np.int64)
        M, R = self.num_samples, self.world_size
        lo, hi = self.rank * M // R, (self.rank + 1) * M // R
        own = np.arange(lo, hi) if hi > lo else np.arange(M)   # fewer samples than ranks: borrow
        items = np.resize(own, self.num_batches * c.batch_size) if M else own
        return _Layout(self.num_batches, order, cum, items)

    def stream_order(self, lay: _Layout, epoch: int, p: int) -> tuple[np.ndarray, list[int]]:
        """Stream p's inputs (flat indices) and its output order (see shuffle_order)."""
        B = self.cfg.batch_size
        first, n = _stream_range(lay.nb, self.cfg.streams, p)
        items = lay.items[first * B:(first + n) * B]
        size = self.cfg.shuffle_buffer if self.cfg.shuffle else 1
        return items, shuffle_order(len(items), size, (self.cfg.seed, epoch, self.rank, p))

    def sample_order(self, epoch: int) -> list[tuple[int, int]]:
        """(shard, sample number) of every slot of this rank's epoch, batch after batch.
        Reads no bytes: for tests and for checking what a run will see."""
        lay, P, B = self.layout(epoch), self.cfg.streams, self.cfg.batch_size
        orders = [self.stream_order(lay, epoch, p) for p in range(P)]
        out = []
        for i in range(lay.nb):
            items, perm = orders[i % P]
            j = i // P
            out += [lay.where(int(items[k])) for k in perm[j * B:(j + 1) * B]]
        return out

    # -- iteration
    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return self.batches(self.epoch, self.start, worker, workers)

    def batches(self, epoch: int, start: int = 0, worker: int = 0, workers: int = 1) -> Iterator[dict]:
        """Batches start + worker, start + worker + workers, ... of the epoch, in order."""
        lay, P, B = self.layout(epoch), self.cfg.streams, self.cfg.batch_size
        mine = range(start + worker, lay.nb, workers)
        orders, needed = {}, collections.defaultdict(set)
        for i in mine:
            p, j = i % P, i // P
            if p not in orders:
                orders[p] = self.stream_order(lay, epoch, p)
            needed[p].update(orders[p][1][j * B:(j + 1) * B])
        bad: dict[int, str] = {}                  # shards this worker gave up on
        readers = {p: _StreamReader(self, lay, orders[p][0], needed[p], bad) for p in needed}
        try:
            for i in mine:
                p, j = i % P, i // P
                raws = [readers[p].get(k) for k in orders[p][1][j * B:(j + 1) * B]]
                yield self._collate(raws, epoch, i)
        finally:
            for r in readers.values():
                r.close()

    def _collate(self, raws: list, epoch: int, index: int) -> dict:
        c = self.cfg
        B, K, T, S = len(raws), c.units, c.units * c.frames_per_unit, c.size
        N = (S // c.patch) ** 2
        L = self.tokenizer.max_len
        video = torch.zeros((B, T, 3, S, S), dtype=torch.uint8, device=c.decode_device)
        text_ids = torch.zeros((B, K, L), dtype=torch.long)
        text_mask = torch.zeros((B, K, L), dtype=torch.bool)
        order = torch.zeros((B, K), dtype=torch.long)
        tube = torch.zeros((B, N), dtype=torch.bool)
        keys, valid, errors = [""] * B, [False] * B, []
        for b, raw in enumerate(raws):
            rng = np.random.default_rng((c.seed, epoch, self.rank, index, b))
            if isinstance(raw, _Miss):
                errors.append(f"{raw.key}: {raw.reason}")
                continue
            key, files = raw
            try:
                s = decode_sample(files, c, self.tokenizer, rng)
            except BadSample as e:
                log.warning("sample %s skipped: %s", key, e)
                errors.append(f"{key}: {e}")
                continue
            video[b].copy_(s["video"])            # also makes the layout contiguous
            text_ids[b], text_mask[b], order[b], tube[b] = s["text_ids"], s["text_mask"], s["order"], s["tube_mask"]
            keys[b], valid[b] = key, True
        good = [b for b in range(B) if valid[b]]
        for b in range(B):                         # stand-ins keep the batch shape (valid False)
            if valid[b]:
                continue
            if good:
                g = min(good, key=lambda x: (x - b) % B)
                video[b], text_ids[b], text_mask[b] = video[g], text_ids[g], text_mask[g]
                order[b], tube[b], keys[b] = order[g], tube[g], keys[g]
            else:
                rng = np.random.default_rng((c.seed, epoch, self.rank, index, b))
                text_ids[b], text_mask[b] = self.tokenizer([""] * K)
                order[b] = torch.arange(K)
                tube[b] = torch.from_numpy(tube_mask(N, c.mask_ratio, rng))
        return {"video": video, "text_ids": text_ids, "text_mask": text_mask, "order": order,
                "tube_mask": tube, "keys": keys, "valid": torch.tensor(valid), "errors": errors}


# ----------------------------------------------------------------------------- the loader

def prefetch_to_device(batches: Iterable[dict], device=None) -> Iterator[dict]:
    """Batches with their tensors on `device` (default: cuda when available), copied one batch
    ahead: pinned memory, non_blocking copies on a side stream, so the copy of batch i+1
    overlaps the step on batch i. On CPU it passes batches through unchanged. Tensors already
    on a GPU (video decoded there) are left where they are."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        yield from batches
        return
    side = torch.cuda.Stream(device)

    def start_copy(batch):
        with torch.cuda.stream(side):
            return {k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True)
                    if isinstance(v, torch.Tensor) and not v.is_cuda else v for k, v in batch.items()}

    def ready(batch):
        main = torch.cuda.current_stream(device)
        main.wait_stream(side)
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                v.record_stream(main)              # memory made on `side`, used on `main`
        return batch

    pending = None
    for batch in batches:
        nxt = start_copy(batch)
        if pending is not None:
            yield ready(pending)
        pending = nxt
    if pending is not None:
        yield ready(pending)


class StreamLoader:
    """Iterable over one rank's batches that knows where it is.

    Each iteration runs the rest of the current epoch (a fresh DataLoader: the workers get
    the epoch and start position), then moves to the next epoch. state_dict() describes the
    batches handed out so far; keep one live iterator at a time. With decode_device cuda the
    batches are made in this process (num_workers is set to 0): CUDA cannot run in forked workers.
    """

    def __init__(self, dataset: ShardStream, num_workers: int = 0, prefetch_factor: int = 2,
                 device=None):
        if num_workers and torch.device(dataset.cfg.decode_device).type == "cuda":
            log.warning("decode_device=%s: decoding in the main process, not in %d workers "
                        "(CUDA cannot be used in forked worker processes)", dataset.cfg.decode_device, num_workers)
            num_workers = 0
        self.dataset, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.device = device                        # None: batches stay on the CPU
        self.epoch, self.batch = 0, 0
        self.stats = collections.Counter(unreadable_shards=len(dataset.unreadable))
        if num_workers > 1 and dataset.cfg.streams % num_workers:
            log.warning("%d workers do not divide %d streams: some tar bytes are read twice",
                        num_workers, dataset.cfg.streams)

    def __len__(self) -> int:
        return self.dataset.num_batches

    def __iter__(self) -> Iterator[dict]:
        ds = self.dataset
        if self.batch >= ds.num_batches:            # the last epoch was finished: next one
            self.epoch, self.batch = self.epoch + 1, 0
        ds.epoch, ds.start = self.epoch, self.batch
        if self.num_workers:
            batches = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
                pin_memory=self.device is not None and torch.cuda.is_available())
        else:
            batches = ds
        if self.device is not None:
            batches = prefetch_to_device(batches, self.device)
        epoch = self.epoch
        for batch in batches:
            self.batch += 1                         # counted when handed out
            self.stats["batches"] += 1
            self.stats["samples"] += len(batch["keys"])
            for e in batch["errors"]:
                self.stats["skipped"] += 1
                self.stats["skipped:" + e.split(": ")[1]] += 1     # "key: reason: message"
            yield batch
        if self.epoch == epoch and self.batch >= ds.num_batches:
            self.epoch, self.batch = epoch + 1, 0

    def state_dict(self) -> dict:
        ds, c = self.dataset, self.dataset.cfg
        return {"version": STATE_VERSION, "epoch": self.epoch, "batches": self.batch,
                "samples": self.batch * c.batch_size, "seed": c.seed, "world_size": ds.world_size,
                "batch_size": c.batch_size, "streams": c.streams, "shuffle": c.shuffle,
                "shuffle_buffer": c.shuffle_buffer, "pad": c.pad, "dataset": ds.dataset_id}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for k in ("version", "seed", "world_size", "batch_size", "streams", "shuffle",
                  "shuffle_buffer", "pad", "dataset"):
            if state.get(k) != mine[k]:
                raise ValueError(f"loader state has {k}={state.get(k)!r}, this loader {mine[k]!r}: "
                                 "the sample order would differ")
        self.epoch, self.batch = int(state["epoch"]), int(state["batches"])


def default_workers(streams: int) -> int:
    """The largest divisor of `streams` not above the CPU count (then no bytes are read twice)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(d for d in range(1, streams + 1) if streams % d == 0 and d <= max(1, cpus))


def make_loader(urls, cfg: LoaderConfig | None = None, *, rank: int = 0, world_size: int = 1,
                num_workers: int | None = None, manifest: str | None = None, tokenizer=None,
                device=None) -> StreamLoader:
    cfg = cfg or LoaderConfig()
    ds = ShardStream(urls, cfg, rank=rank, world_size=world_size, manifest=manifest, tokenizer=tokenizer)
    return StreamLoader(ds, default_workers(cfg.streams) if num_workers is None else num_workers,
                        device=device)


def make_batches(shards, *, batch_size: int, units: int = 4, frames_per_unit: int = 3,
                 image_size: int = 224, patch_size: int = 16, mask_ratio: float = 0.5,
                 text_len: int = 32, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int | None = None, train: bool = True, tokenizer: str | None = None,
                 manifest: str | None = None, **overrides) -> StreamLoader:
    """The trainer's entry point (pipeline.train.data): keyword names as the trainer uses them."""
    from pipeline.text import load_tokenizer
    cfg = LoaderConfig(batch_size=batch_size, units=units, frames_per_unit=frames_per_unit,
                       size=image_size, patch=patch_size, mask_ratio=mask_ratio, text_len=text_len,
                       seed=seed, train=train, **overrides)
    return make_loader(shards, cfg, rank=rank, world_size=world_size, num_workers=num_workers,
                       manifest=manifest, tokenizer=load_tokenizer(tokenizer, text_len))
