"""Local paths or any pyarrow filesystem URI (s3://, gs://, hdfs://, ...), behind a few calls.

Credentials and endpoints come from the environment the way each filesystem reads them
(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL),
never from code or config files.
"""
from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pyarrow.fs as pafs


def is_remote(path: str) -> bool:
    scheme = urlsplit(path).scheme
    return len(scheme) > 1 and scheme != "file"        # "c:" is a drive, not a scheme


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names]) if is_remote(base) else os.path.join(base, *names)


def _fs(uri: str):
    return pafs.FileSystem.from_uri(uri)


def open_input(path: str):
    """A readable binary file object (random access where the filesystem allows it)."""
    if not is_remote(path):
        return open(path, "rb")
    fs, p = _fs(path)
    return fs.open_input_file(p)


def upload(local: str, remote: str) -> None:
    """Copy a local file to `remote` in one PUT-like write: object stores never expose a
    partial object, so a crash leaves the old object or the new one."""
    fs, p = _fs(remote)
    with open(local, "rb") as src, fs.open_output_stream(p) as dst:
        shutil.copyfileobj(src, dst, 8 << 20)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def download(remote: str, local: str) -> None:
    """Copy `remote` to `local` (written to .tmp, then renamed)."""
    fs, p = _fs(remote)
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    with fs.open_input_stream(p) as src, open(local + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    os.replace(local + ".tmp", local)


def list_files(path: str) -> list[str]:
    """Names of the files directly under the directory (or key prefix) `path`, sorted; none
    when it does not exist."""
    if not is_remote(path):
        if not os.path.isdir(path):
            return []
        return sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
    fs, p = _fs(path)
    infos = fs.get_file_info(pafs.FileSelector(p.rstrip("/"), allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
