"""Stage 1: read URL lists (.txt, .csv, .tsv, .jsonl, .parquet) into UrlRows.

`read_url_list` is a generator, so a list of millions of URLs is never held whole; only a
set of 8-byte hashes is kept to drop duplicates. Column `url` is required, `id` optional
(else a stable hash of the URL); every other column travels into each sample's `meta`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Iterator, Union
from urllib.parse import urlsplit

from pipeline import storage
from pipeline.errors import StageError
from schemas import ErrorRow, UrlRow

_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def url_id(url: str) -> str:
    """Stable id of a URL: the same URL gets the same id in every run."""
    return hashlib.sha1(url.encode()).hexdigest()[:16]


def safe_id(raw: str) -> str:
    """Ids become tar member names and file names: keep [A-Za-z0-9_-] only.

    A changed id gets a hash suffix so that two ids that differ only in unsafe characters
    stay distinct. Dots are replaced because WebDataset splits KEY.ext at the first dot.
    """
    clean = _SAFE_ID.sub("_", raw)[:80]
    return clean if clean == raw and clean else f"{clean}-{url_id(raw)[:8]}"


def check_url(url: str, allow_local_files: bool) -> str:
    """Return the URL (local paths as given) or raise StageError(bad_scheme/bad_row)."""
    if not url:
        raise StageError("read", "bad_row", "empty url")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return url
    if allow_local_files and (scheme == "file" or scheme == "" and Path(url).is_absolute()):
        return url
    raise StageError("read", "bad_scheme", f"scheme {scheme or '(none)'!r} is not allowed: {url[:200]}")


def _raw_rows(path: str) -> Iterator[Union[dict, str]]:
    """Yield each input row as a dict, or a string describing why the row is malformed."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        with storage.open_input(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=10_000):
                yield from batch.to_pylist()
        return
    with io.TextIOWrapper(storage.open_input(path), encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if "url" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no 'url' column (columns: {reader.fieldnames})")
            for row in reader:
                if None in row:                      # more cells than header columns
                    yield f"row has {len(reader.fieldnames) + len(row[None])} cells, header has {len(reader.fieldnames)}"
                else:
                    yield row
        elif suffix == ".jsonl":
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"invalid JSON: {e}"
                    continue
                yield obj if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"
        else:                                        # .txt or anything else: one URL a line
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield {"url": line}


def read_url_list(path: str, allow_local_files: bool = False,
                  stats: dict | None = None) -> Iterator[Union[UrlRow, ErrorRow]]:
    """Yield a UrlRow per new input and an ErrorRow per malformed one; duplicates vanish.

    `row` numbers count only yielded items, so they are stable for the same input file.
    """
    seen: set[int] = set()
    n = 0
    for raw in _raw_rows(path):
        if isinstance(raw, str):
            yield ErrorRow(id=f"badrow-{n}", url="", row=n, stage="read", reason="bad_row",
                           message=raw, retryable=False)
            n += 1
            continue
        url = str(raw.get("url") or "").strip()
        given = raw.get("id")
        vid = safe_id(str(given)) if given not in (None, "") else url_id(url)
        try:
            check_url(url, allow_local_files)
        except StageError as e:
            yield ErrorRow(id=vid, url=url, row=n, stage="read", reason=e.reason,
                           message=e.message, retryable=False)
            n += 1
            continue
        url_digest = int.from_bytes(hashlib.sha1(url.encode()).digest()[:8], "big")
        id_digest = int.from_bytes(hashlib.sha1(b"id:" + vid.encode()).digest()[:8], "big")
        if url_digest in seen or id_digest in seen:
            if stats is not None:                    # a duplicate URL or id: keep the first
                stats["duplicates"] = stats.get("duplicates", 0) + 1
            continue
        seen.update((url_digest, id_digest))
        meta = {k: _jsonable(v) for k, v in raw.items() if k not in ("url", "id")}
        yield UrlRow(id=vid, url=url, row=n, meta=meta)
        n += 1


def _jsonable(value):
    """Parquet cells can be dates, decimals, bytes...: make them JSON-safe."""
    return json.loads(json.dumps(value, default=str))
